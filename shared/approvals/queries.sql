-- The approvals context's statements (tables: approvals, approval_votes, approval_policies,
-- cloud_resources).

-- name: policy
SELECT expiry_seconds, reminder_seconds, required_approvals, starter_may_approve
FROM approval_policies WHERE org_id = %s;

-- name: put_policy
INSERT INTO approval_policies (org_id, expiry_seconds, reminder_seconds, required_approvals, starter_may_approve,
                               updated_by)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (org_id) DO UPDATE SET expiry_seconds = EXCLUDED.expiry_seconds,
    reminder_seconds = EXCLUDED.reminder_seconds, required_approvals = EXCLUDED.required_approvals,
    starter_may_approve = EXCLUDED.starter_may_approve, updated_by = EXCLUDED.updated_by, updated_at = now();

-- name: insert_approval
-- A run's gated call; the same interrupt reported again (a retried report) inserts nothing.
INSERT INTO approvals (id, org_id, run_id, agent_id, version, package_digest, tool, arguments, action_canonical,
                       action_hash, interrupt_id, impact, monthly_saving_micros, requested_by,
                       required_approvals, starter_may_approve, expires_at, remind_at, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, interrupt_id) DO NOTHING
RETURNING id;

-- name: approval
SELECT a.* FROM approvals a WHERE a.id = %s AND a.org_id = %s;

-- name: approval_by_id
SELECT a.* FROM approvals a WHERE a.id = %s;

-- name: approval_for_update
SELECT a.* FROM approvals a WHERE a.id = %s AND a.org_id = %s FOR UPDATE;

-- name: approval_of_run_for_update
SELECT a.* FROM approvals a WHERE a.id = %s AND a.run_id = %s FOR UPDATE;

-- name: approvals_of_run
SELECT a.* FROM approvals a WHERE a.run_id = %s ORDER BY a.created_at, a.id;

-- name: votes
SELECT approver, decision, comment, created_at FROM approval_votes WHERE approval_id = %s ORDER BY created_at;

-- name: votes_of
SELECT approval_id, approver, decision, comment, created_at FROM approval_votes
WHERE approval_id = ANY(%s) ORDER BY created_at;

-- name: insert_vote
INSERT INTO approval_votes (approval_id, approver, decision, comment) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING RETURNING approver;

-- name: count_approvals
SELECT count(*) FROM approval_votes WHERE approval_id = %s AND decision = 'approve';

-- name: decide
-- The decision: only a pending approval changes (the row is locked by the caller already).
UPDATE approvals SET status = %s, decided_by = %s, decided_at = %s, decision_comment = %s, updated_at = now()
WHERE id = %s AND status = 'pending'
RETURNING id;

-- name: pending_left
SELECT count(*) FROM approvals WHERE run_id = %s AND status = 'pending';

-- name: approvals_page
SELECT a.* FROM approvals a
WHERE a.org_id = %s
  AND (%s::text IS NULL OR a.status = %s)
  AND (%s::text IS NULL OR a.agent_id = %s)
  AND (%s::text IS NULL OR a.run_id = %s)
  AND (%s::timestamptz IS NULL OR (a.created_at, a.id) < (%s::timestamptz, %s::text))
ORDER BY a.created_at DESC, a.id DESC LIMIT %s;

-- name: due_expiry
SELECT id, org_id FROM approvals WHERE status = 'pending' AND expires_at <= %s ORDER BY expires_at LIMIT %s;

-- name: due_reminders
UPDATE approvals SET reminded_at = %s
WHERE id IN (SELECT id FROM approvals WHERE status = 'pending' AND reminded_at IS NULL AND remind_at <= %s
             ORDER BY remind_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, org_id, run_id, tool, expires_at;

-- name: claim_execution
-- The first claim of an approved action's execution (a redelivered resume claims again only
-- when no outcome was recorded: remediation actions are idempotent).
UPDATE approvals SET execution_started_at = coalesce(execution_started_at, %s), updated_at = now()
WHERE id = %s AND status = 'approved' AND executed_at IS NULL
RETURNING id;

-- name: record_execution
UPDATE approvals SET executed_at = %s, execution = %s::jsonb, updated_at = now()
WHERE id = %s AND status = 'approved' AND executed_at IS NULL
RETURNING id;

-- name: cancel_pending_of_run
UPDATE approvals SET status = 'cancelled', decided_at = %s, decided_by = %s, updated_at = now()
WHERE run_id = %s AND status = 'pending'
RETURNING id, org_id;

-- name: resources_page
-- A page of the org's resources by resource id, in the kernel's ByKey shape. Parameters: org,
-- resource id or NULL, resource id or NULL, limit.
SELECT resource_id, name, service, region, state, machine_type, monthly_cost_micros, history, updated_at
FROM cloud_resources WHERE org_id = %s AND (%s::text IS NULL OR resource_id > %s)
ORDER BY resource_id LIMIT %s;

-- name: upsert_resource
INSERT INTO cloud_resources (org_id, resource_id, name, service, region, machine_type, monthly_cost_micros)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (org_id, resource_id) DO UPDATE SET name = EXCLUDED.name, service = EXCLUDED.service,
    region = EXCLUDED.region, monthly_cost_micros = EXCLUDED.monthly_cost_micros, updated_at = now();

-- name: resource_for_update
SELECT resource_id, state, machine_type FROM cloud_resources WHERE org_id = %s AND resource_id = %s FOR UPDATE;

-- name: set_resource_state
-- An action applied to the local inventory: its new state and machine type, and the history line.
UPDATE cloud_resources SET state = %s, machine_type = %s, updated_at = now(),
    history = history || jsonb_build_array(%s::jsonb)
WHERE org_id = %s AND resource_id = %s;
