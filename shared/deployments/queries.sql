-- used by catalog

-- name: catalog_has_installed
-- Has the org ever installed the agent? Uninstalled deployments count, failed ones do not.
SELECT EXISTS (SELECT 1 FROM deployments WHERE org_id = %s AND agent_id = %s AND status <> 'failed');
