-- The identity context's statements: users, tokens, API keys, orgs, members, preferences and
-- idempotency keys (shared/identity/*.py load them with Queries("shared.identity")).

-- name: user_by_email
-- The user with this email (any case), if any.
SELECT id, email, display_name, platform_admin, created_at FROM users WHERE lower(email) = lower(%s);

-- name: user_by_id
-- A user by id.
SELECT id, email, display_name, platform_admin, created_at FROM users WHERE id = %s;

-- name: insert_user
-- A new user (id, email, platform admin); a concurrent insert of the same email wins quietly.
INSERT INTO users (id, email, platform_admin) VALUES (%s, %s, %s) ON CONFLICT (lower(email)) DO NOTHING;

-- name: set_platform_admin
-- Set (or clear) a user's platform-admin flag.
UPDATE users SET platform_admin = %s WHERE id = %s;

-- name: principal_by_id
-- Authentication: the user behind a verified token and the role held in the org the request
-- addresses, in one statement. Parameters: the addressed org (NULL for none), then the user's
-- id (the local issuer's tokens). The three statements below are the same for an identity
-- provider's user (by email, any case) and with every membership (for GET /me).
SELECT u.id, u.email, u.platform_admin,
       (SELECT role FROM memberships WHERE user_id = u.id AND org_id = %s) AS org_role
FROM users u WHERE u.id = %s;

-- name: principal_by_email
SELECT u.id, u.email, u.platform_admin,
       (SELECT role FROM memberships WHERE user_id = u.id AND org_id = %s) AS org_role
FROM users u WHERE lower(u.email) = lower(%s);

-- name: principal_by_id_with_memberships
SELECT u.id, u.email, u.platform_admin,
       (SELECT role FROM memberships WHERE user_id = u.id AND org_id = %s) AS org_role,
       COALESCE((SELECT json_agg(json_build_object('org_id', m.org_id, 'org_name', o.name, 'role', m.role)
                                 ORDER BY o.created_at, o.id)
                 FROM memberships m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = u.id), '[]') AS memberships
FROM users u WHERE u.id = %s;

-- name: principal_by_email_with_memberships
SELECT u.id, u.email, u.platform_admin,
       (SELECT role FROM memberships WHERE user_id = u.id AND org_id = %s) AS org_role,
       COALESCE((SELECT json_agg(json_build_object('org_id', m.org_id, 'org_name', o.name, 'role', m.role)
                                 ORDER BY o.created_at, o.id)
                 FROM memberships m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = u.id), '[]') AS memberships
FROM users u WHERE lower(u.email) = lower(%s);

-- name: api_key_for_authentication
-- An API key's owner, role and hash (compared in constant time by the caller).
SELECT id, org_id, role, secret_hash, deployment_id, revoked_at FROM api_keys WHERE id = %s;

-- name: insert_refresh_token
-- A new refresh token: id, family, user, hash of the secret, expiry. Refresh tokens rotate on
-- every use; a used one presented again revokes its family.
INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) VALUES (%s, %s, %s, %s, %s);

-- name: refresh_token_for_update
-- A refresh token with its user's email, locked for its rotation.
SELECT r.id, r.family_id, r.user_id, r.token_hash, r.issued_at, r.expires_at, r.used_at, r.revoked_at, u.email
FROM refresh_tokens r JOIN users u ON u.id = r.user_id WHERE r.id = %s FOR UPDATE OF r;

-- name: revoke_refresh_family
-- End every live session of a token family (a used token came back: it leaked).
UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = %s AND revoked_at IS NULL;

-- name: mark_refresh_token_used
UPDATE refresh_tokens SET used_at = now() WHERE id = %s;

-- name: insert_api_key
-- A new key: id, org, name, role, hash of the secret, deployment (data-plane keys), creator.
INSERT INTO api_keys (id, org_id, name, role, secret_hash, deployment_id, created_by)
VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, org_id, name, role, created_at, revoked_at;

-- name: revoke_api_key
-- Revoke a live key of the org; no row when the org has no such live key.
UPDATE api_keys SET revoked_at = now() WHERE id = %s AND org_id = %s AND revoked_at IS NULL
RETURNING id, org_id, name, role, created_at, revoked_at;

-- name: api_keys_of_org
-- Every key of the org, oldest first (never the hashes).
SELECT id, org_id, name, role, created_at, revoked_at FROM api_keys WHERE org_id = %s ORDER BY created_at;

-- name: insert_org
-- A new org (id, name, creator); its audit head comes from a trigger (migration 0008).
INSERT INTO orgs (id, name, created_by) VALUES (%s, %s, %s) RETURNING id, name, created_by, created_at;

-- name: org_by_id
SELECT id, name, created_by, created_at FROM orgs WHERE id = %s;

-- name: insert_membership
-- A new member (org, user, role); no row when the user is a member already.
INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING;

-- name: role_in_org
-- The role a user holds in an org, if a member.
SELECT role FROM memberships WHERE org_id = %s AND user_id = %s;

-- name: members_of_org
-- Every member with their email and role, in the order they joined.
SELECT m.org_id, m.user_id, u.email, m.role, m.created_at FROM memberships m
JOIN users u ON u.id = m.user_id WHERE m.org_id = %s ORDER BY m.created_at;

-- name: member
SELECT m.org_id, m.user_id, u.email, m.role, m.created_at FROM memberships m
JOIN users u ON u.id = m.user_id WHERE m.org_id = %s AND m.user_id = %s;

-- name: lock_members
-- Lock every membership row of the org, so that two concurrent demotions cannot both pass the
-- last-admin check.
SELECT user_id, role FROM memberships WHERE org_id = %s FOR UPDATE;

-- name: count_admins
SELECT count(*) FROM memberships WHERE org_id = %s AND role = 'admin';

-- name: set_member_role
UPDATE memberships SET role = %s WHERE org_id = %s AND user_id = %s;

-- name: delete_member
DELETE FROM memberships WHERE org_id = %s AND user_id = %s;

-- name: member_roles_of_user
-- Every org a user belongs to, with the role held there (a few rows; memberships_user_idx).
SELECT org_id, role FROM memberships WHERE user_id = %s;

-- name: preferences_of_org
-- An org's preferences (memory Level 5), if set.
SELECT org_id, data, updated_at FROM org_preferences WHERE org_id = %s;

-- name: put_preferences
-- Replace the org's preferences (org, JSON, who).
INSERT INTO org_preferences (org_id, data, updated_by) VALUES (%s, %s::jsonb, %s)
ON CONFLICT (org_id) DO UPDATE SET data = EXCLUDED.data, updated_by = EXCLUDED.updated_by, updated_at = now()
RETURNING org_id, data, updated_at;

-- name: expire_idempotency_key
-- Idempotency keys: a claim per (scope, key), then the sealed response to replay. Forget the claim of (scope, key) once it is older than the given seconds.
DELETE FROM idempotency_keys WHERE scope = %s AND key = %s AND created_at < now() - make_interval(secs => %s);

-- name: claim_idempotency_key
-- Claim (scope, key) for a request (method, path, body hash); no row when it is claimed already.
INSERT INTO idempotency_keys (scope, key, method, path, request_hash) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (scope, key) DO NOTHING;

-- name: idempotency_key
SELECT method, path, request_hash, status_code, response_sealed FROM idempotency_keys WHERE scope = %s AND key = %s;

-- name: complete_idempotency_key
-- Record the response (status, sealed body) of (scope, key).
UPDATE idempotency_keys SET status_code = %s, response_sealed = %s WHERE scope = %s AND key = %s;

-- name: forget_idempotency_key
-- Forget a completed (scope, key) whose stored response no longer opens.
DELETE FROM idempotency_keys WHERE scope = %s AND key = %s;

-- name: abandon_idempotency_key
-- Release a claim whose request failed on our side, so that a retry runs again.
DELETE FROM idempotency_keys WHERE scope = %s AND key = %s AND status_code IS NULL;

-- used by catalog

-- name: catalog_org_name
-- An org's name (a listing's publisher, a review's org).
SELECT name FROM orgs WHERE id = %s;

-- name: catalog_org_names
-- The names of some orgs, by id (the orgs of a page of reviews).
SELECT id, name FROM orgs WHERE id = ANY(%s::text[]);

-- name: catalog_system_org
-- The first org of this name that the user created (the platform org of the built-in agents).
SELECT id FROM orgs WHERE created_by = %s AND name = %s ORDER BY created_at LIMIT 1;

-- name: catalog_insert_system_org
-- A system org (the platform org of the built-in agents).
INSERT INTO orgs (id, name, created_by) VALUES (%s, %s, %s);

-- name: catalog_insert_system_admin
-- The system user as the admin of its org.
INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'admin');

-- name: count_rate_limit_hits
-- Rate limits: add hits to a caller's window (key, window start, hits) and answer the window's
-- total, every process's hits included (shared/identity/rate_limits.py).
INSERT INTO rate_limit_hits (key, window_start, hits) VALUES (%s, %s, %s)
ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limit_hits.hits + EXCLUDED.hits
RETURNING hits;

-- name: forget_rate_limit_windows
-- Drop the windows that started before the given second (they no longer limit anyone).
DELETE FROM rate_limit_hits WHERE window_start < %s;
