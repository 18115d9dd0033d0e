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
