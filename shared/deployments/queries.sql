-- used by runs

-- name: deployment_brief
-- A deployment by id, across orgs: its org, what it runs, its state and type.
SELECT id, org_id, agent_id, version, status, deployment_type FROM deployments WHERE id = %s;

-- name: deployment_grants
-- A deployment's config and granted permissions, as they are now.
SELECT config, granted_permissions FROM deployments WHERE id = %s;

-- name: uninstalled_among
-- Which of some deployments are uninstalled.
SELECT id FROM deployments WHERE id = ANY(%s::text[]) AND status = 'uninstalled';
