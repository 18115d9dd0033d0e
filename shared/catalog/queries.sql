-- used by runs

-- name: listing_id_named
-- The id of the listing with this name, whatever its status.
SELECT id FROM agents WHERE name = %s;

-- name: manifest_of_version
-- A version's manifest whatever its status.
SELECT manifest FROM agent_versions WHERE agent_id = %s AND version = %s;
