-- used by deployments

-- name: version_manifest
-- The manifest of one version of a listing, whatever its review status.
-- Parameters: agent id, version.
SELECT manifest FROM agent_versions WHERE agent_id = %s AND version = %s;
