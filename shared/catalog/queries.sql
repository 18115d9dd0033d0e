-- used by deployments and runs

-- name: version_manifest
-- The manifest of one version of a listing, whatever its review status.
-- Parameters: agent id, version.
SELECT manifest FROM agent_versions WHERE agent_id = %s AND version = %s;

-- name: listing_id_named
-- The id of the listing with this name, whatever its status.
SELECT id FROM agents WHERE name = %s;
