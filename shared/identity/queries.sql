-- used by runs

-- name: member_roles_of_user
-- Every org a user belongs to, with the role held there (a few rows; memberships_user_idx).
SELECT org_id, role FROM memberships WHERE user_id = %s;
