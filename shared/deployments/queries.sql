-- The deployments context's statements (it owns the table deployments).
-- Every statement that answers a deployment returns the same columns, in this order:
--   id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions,
--   pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by,
--   created_at, updated_at, dataplane_key_id, status_before_upgrade

-- name: deployment
-- One deployment of an org, if any. Parameters: deployment id, org.
SELECT id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions,
       pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by,
       created_at, updated_at, dataplane_key_id, status_before_upgrade
FROM deployments WHERE id = %s AND org_id = %s;

-- name: deployment_for_update
-- The same, locked until the transaction ends. Parameters: deployment id, org.
SELECT id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions,
       pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by,
       created_at, updated_at, dataplane_key_id, status_before_upgrade
FROM deployments WHERE id = %s AND org_id = %s FOR UPDATE;

-- name: insert_deployment
-- A new deployment, pending. Parameters: id, org, agent id, version, deployment type, config (JSON),
-- granted permissions (JSON), created by.
INSERT INTO deployments (id, org_id, agent_id, version, deployment_type, status, config, granted_permissions,
                         created_by)
VALUES (%s, %s, %s, %s, %s, 'pending', %s::jsonb, %s::jsonb, %s)
RETURNING id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions,
          pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by,
          created_at, updated_at, dataplane_key_id, status_before_upgrade;

-- name: move_deployment
-- A move of the state machine, with the columns that change with it: each movable column takes a
-- pair (whether the move sets it, its new value; JSON as text) and keeps its value otherwise.
-- Parameters: status, reason, the pairs in service.py's _MOVABLE order, deployment id.
UPDATE deployments SET status = %s, status_reason = %s, updated_at = now(),
  version = CASE WHEN %s THEN %s ELSE version END,
  granted_permissions = CASE WHEN %s THEN %s::jsonb ELSE granted_permissions END,
  pending_version = CASE WHEN %s THEN %s ELSE pending_version END,
  pending_permissions = CASE WHEN %s THEN %s::jsonb ELSE pending_permissions END,
  status_before_upgrade = CASE WHEN %s THEN %s ELSE status_before_upgrade END,
  dataplane_key_id = CASE WHEN %s THEN %s ELSE dataplane_key_id END,
  dataplane = CASE WHEN %s THEN %s::jsonb ELSE dataplane END,
  registered_at = CASE WHEN %s THEN %s ELSE registered_at END,
  last_heartbeat_at = CASE WHEN %s THEN %s ELSE last_heartbeat_at END,
  uninstalled_at = CASE WHEN %s THEN %s ELSE uninstalled_at END
WHERE id = %s
RETURNING id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions,
          pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by,
          created_at, updated_at, dataplane_key_id, status_before_upgrade;

-- name: deployments_page
-- A page of an org's deployments, newest first, optionally of one status (kernel Keyset).
-- Parameters: org, status or NULL, status or NULL, the Keyset's three, limit.
SELECT id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions,
       pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by,
       created_at, updated_at, dataplane_key_id, status_before_upgrade
FROM deployments
WHERE org_id = %s AND (%s::text IS NULL OR status = %s)
  AND (%s::timestamptz IS NULL OR (created_at, id) < (%s::timestamptz, %s::text))
ORDER BY created_at DESC, id DESC LIMIT %s;

-- name: set_version
-- An upgrade that adds no permission: the deployment moves to the new version at once.
-- Parameters: version, deployment id.
UPDATE deployments SET version = %s, updated_at = now() WHERE id = %s;

-- name: record_registration
-- A data plane registered again (its deployment was already ready).
-- Parameters: data plane info (JSON), registered at, last heartbeat at, deployment id.
UPDATE deployments SET dataplane = %s::jsonb, registered_at = %s, last_heartbeat_at = %s WHERE id = %s;

-- name: record_heartbeat
-- A data plane is alive. Parameters: deployment id.
UPDATE deployments SET last_heartbeat_at = now() WHERE id = %s;

-- name: stale_ready_deployments
-- Ready deployments whose last heartbeat is older than the cutoff, locked (those another sweep
-- holds are skipped). Parameters: cutoff.
SELECT id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions,
       pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by,
       created_at, updated_at, dataplane_key_id, status_before_upgrade
FROM deployments WHERE status = 'ready' AND last_heartbeat_at < %s
FOR UPDATE SKIP LOCKED;

-- name: set_dataplane_key
-- The deployment's data-plane credential was replaced. Parameters: api key id, deployment id.
UPDATE deployments SET dataplane_key_id = %s, updated_at = now() WHERE id = %s;

-- name: has_installed
-- Has the org ever installed the agent? Uninstalled deployments count, failed ones do not.
-- Parameters: org, agent id.
SELECT EXISTS (SELECT 1 FROM deployments WHERE org_id = %s AND agent_id = %s AND status <> 'failed');

-- name: deployment_for_run
-- What a run's start needs of its deployment, looked up by id alone (whatever the org).
-- Parameters: deployment id.
SELECT id, org_id, agent_id, version, deployment_type, status, config, granted_permissions
FROM deployments WHERE id = %s;

-- name: installed_during
-- Deployments installed at some moment of [start, end): created before its end, not uninstalled
-- before its start, and not failed (a failed provisioning never ran). Billing's subscription fees.
SELECT id, org_id, agent_id, version, created_at, uninstalled_at FROM deployments
WHERE created_at < %s AND (uninstalled_at IS NULL OR uninstalled_at >= %s) AND status <> 'failed'
ORDER BY id;

-- name: uninstalled_among
-- Which of some deployments are uninstalled (the run reconciler closes their runs).
SELECT id FROM deployments WHERE id = ANY(%s::text[]) AND status = 'uninstalled';

-- name: org_deploys_any_version
-- Does the org have a deployment (not uninstalled) of one of these versions? Parameters: org, then
-- the agent ids and the versions as two arrays of the same length (pairs by position).
SELECT EXISTS (
    SELECT 1 FROM deployments d
    JOIN unnest(%s::text[], %s::text[]) AS v (agent_id, version)
      ON d.agent_id = v.agent_id AND d.version = v.version
    WHERE d.org_id = %s AND d.status <> 'uninstalled');
