-- The runs context's statements (tables: runs, run_logs, run_checkpoints, run_checkpoint_writes,
-- tasks). The queue's own statements live with its adapter (shared/runs/adapters/pg_task_queue.py).
--
-- A run is read with one of two column lists: every column (what users read, ``RunOut``), or the
-- 13 a data plane's call needs (lease checks, completion: ``RunState``), without inputs, outputs
-- and times, which would only be converted to be thrown away.
-- Templates (marked so) are filled by the code from fixed values; none holds a brace of its own.

-- name: insert_run
-- A new queued run. Held back (Tx.defer) with its task and audit entry, so that creating a run is
-- one round trip for its transaction.
INSERT INTO runs (id, org_id, agent_id, deployment_id, version, inputs, max_attempts, created_by, task_id)
VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)
RETURNING id, org_id, agent_id, deployment_id, version, status, inputs, outputs, error, metrics, task_id,
          attempt, max_attempts, cancel_requested, lease_hash, worker, completion_lease, completion,
          created_by, created_at, updated_at, started_at, finished_at;

-- name: run
-- A run of an agent, every column.
SELECT r.id, r.org_id, r.agent_id, r.deployment_id, r.version, r.status, r.inputs, r.outputs, r.error,
       r.metrics, r.task_id, r.attempt, r.max_attempts, r.cancel_requested, r.lease_hash, r.worker,
       r.completion_lease, r.completion, r.created_by, r.created_at, r.updated_at, r.started_at,
       r.finished_at, r.remediation
FROM runs r WHERE r.id = %s AND r.agent_id = %s;

-- name: run_for_update
-- A run of an agent, every column, locked (a cancel).
SELECT r.id, r.org_id, r.agent_id, r.deployment_id, r.version, r.status, r.inputs, r.outputs, r.error,
       r.metrics, r.task_id, r.attempt, r.max_attempts, r.cancel_requested, r.lease_hash, r.worker,
       r.completion_lease, r.completion, r.created_by, r.created_at, r.updated_at, r.started_at,
       r.finished_at, r.remediation
FROM runs r WHERE r.id = %s AND r.agent_id = %s FOR UPDATE OF r;

-- name: run_state
-- What a data plane's call needs of a run of an agent (a log batch's lease check).
SELECT r.id, r.org_id, r.agent_id, r.deployment_id, r.version, r.status, r.task_id, r.attempt,
       r.max_attempts, r.cancel_requested, r.lease_hash, r.completion_lease, r.completion
FROM runs r WHERE r.id = %s AND r.agent_id = %s;

-- name: run_state_for_update
-- What a data plane's call needs of a run of an agent, locked (a completion), whether an
-- approved action of the run executed (its success is then ``remediated``) and what the executed
-- actions save a month: read under the lock, nobody changes them before the completion commits.
SELECT r.id, r.org_id, r.agent_id, r.deployment_id, r.version, r.status, r.task_id, r.attempt,
       r.max_attempts, r.cancel_requested, r.lease_hash, r.completion_lease, r.completion,
       x.executed > 0 AS remediated, x.saving AS remediation_saving_micros
FROM runs r
CROSS JOIN LATERAL (
    SELECT count(*) AS executed, coalesce(sum((e ->> 'monthly_saving_micros')::bigint), 0) AS saving
    FROM jsonb_array_elements(coalesce(r.remediation, '[]'::jsonb)) e
    WHERE e ? 'outcome' AND NOT coalesce((e -> 'outcome') ? 'error', false)) x
WHERE r.id = %s AND r.agent_id = %s FOR UPDATE OF r;

-- name: run_state_by_id_for_update
-- A run's state by its id alone, locked (the queue's verdict, the reconciliation).
SELECT r.id, r.org_id, r.agent_id, r.deployment_id, r.version, r.status, r.task_id, r.attempt,
       r.max_attempts, r.cancel_requested, r.lease_hash, r.completion_lease, r.completion
FROM runs r WHERE r.id = %s FOR UPDATE OF r;

-- name: run_status
-- A run's status (a live log stream polls it).
SELECT status FROM runs WHERE id = %s;

-- name: run_status_and_deployment
-- Why a delivery could not start its run: finished already, or gone.
SELECT status, deployment_id FROM runs WHERE id = %s;

-- name: runs_page
-- An org's runs, newest first, each filter applied when given (a list shows no inputs or outputs).
-- The last three parameters before the limit are the keyset position (kernel Keyset.params).
SELECT r.id, r.agent_id, r.deployment_id, r.version, r.status, r.error, r.metrics, r.attempt,
       r.cancel_requested, r.created_by, r.created_at, r.started_at, r.finished_at
FROM runs r
WHERE r.org_id = %s
  AND (%s::text IS NULL OR r.status = %s)
  AND (%s::text IS NULL OR r.agent_id = %s)
  AND (%s::text IS NULL OR r.deployment_id = %s)
  AND (%s::timestamptz IS NULL OR (r.created_at, r.id) < (%s::timestamptz, %s::text))
ORDER BY r.created_at DESC, r.id DESC LIMIT %s;

-- name: start_run
-- A delivery starts the run: attempt, lease hash, worker, task id, run id, deployment id.
-- Template: {async_commit} is kernel ASYNC_COMMIT. The UPDATE locks the run and re-checks its
-- status, so a cancel or a completion that committed first wins and the run is not started again.
-- It commits asynchronously, as the claim before it does: if the database crashed before the WAL
-- reached the disk the run would still be queued under an older lease, its worker's logs and
-- completion would be refused (LeaseLost) and the task, once its lease ran out, delivered again.
UPDATE runs r SET status = 'running', attempt = %s, lease_hash = %s, worker = %s, task_id = %s,
                  started_at = coalesce(r.started_at, now()), updated_at = now()
WHERE r.id = %s AND r.deployment_id = %s AND r.status IN ('queued', 'running')
  AND {async_commit}
RETURNING r.id, r.agent_id, r.version, r.inputs, r.max_attempts, r.cancel_requested,
          (SELECT coalesce(max(l.seq), 0) + 1 FROM run_logs l WHERE l.run_id = r.id) AS next_log_seq;

-- name: request_cancel
-- Flag a running run for cancel; its worker sees it at its next heartbeat.
UPDATE runs SET updated_at = now(), cancel_requested = true WHERE id = %s
RETURNING id, org_id, agent_id, deployment_id, version, status, inputs, outputs, error, metrics, task_id,
          attempt, max_attempts, cancel_requested, lease_hash, worker, completion_lease, completion,
          created_by, created_at, updated_at, started_at, finished_at;

-- name: schedule_retry
-- A failed attempt that will be retried: the run is queued again, the error and the completion's
-- answer (error, completion lease, completion) kept.
UPDATE runs SET updated_at = now(), status = 'queued', error = %s, completion_lease = %s, completion = %s::jsonb
WHERE id = %s;

-- name: finish_run
-- Move a run to a final status and drop its checkpoints (they exist to resume a redelivered run;
-- a finished run is never resumed). Data-modifying CTEs run whether or not the UPDATE refers to
-- them: one statement. Parameters: run id twice, then status, error, outputs, metrics,
-- finished_at; the completion lease and answer (null: unchanged); whether to set
-- cancel_requested; the run id.
WITH w AS (DELETE FROM run_checkpoint_writes WHERE run_id = %s),
     c AS (DELETE FROM run_checkpoints WHERE run_id = %s)
UPDATE runs SET updated_at = now(), status = %s, error = %s, outputs = %s::jsonb, metrics = %s::jsonb,
                finished_at = %s, completion_lease = coalesce(%s, completion_lease),
                completion = coalesce(%s::jsonb, completion), cancel_requested = cancel_requested OR %s
WHERE id = %s;

-- name: finish_run_returning
-- finish_run, answering the run's every column.
WITH w AS (DELETE FROM run_checkpoint_writes WHERE run_id = %s),
     c AS (DELETE FROM run_checkpoints WHERE run_id = %s)
UPDATE runs SET updated_at = now(), status = %s, error = %s, outputs = %s::jsonb, metrics = %s::jsonb,
                finished_at = %s, completion_lease = coalesce(%s, completion_lease),
                completion = coalesce(%s::jsonb, completion), cancel_requested = cancel_requested OR %s
WHERE id = %s
RETURNING id, org_id, agent_id, deployment_id, version, status, inputs, outputs, error, metrics, task_id,
          attempt, max_attempts, cancel_requested, lease_hash, worker, completion_lease, completion,
          created_by, created_at, updated_at, started_at, finished_at;

-- name: insert_logs
-- A whole batch of log lines in one statement; ``fields`` travels as text and is cast per row. A
-- line already stored (a resent batch) is skipped.
INSERT INTO run_logs (run_id, seq, ts, level, step, message, fields, attempt)
SELECT %s, u.seq, u.ts, u.level, u.step, u.message, u.fields::jsonb, %s
FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS u(seq, ts, level, step, message, fields)
ON CONFLICT (run_id, seq) DO NOTHING;

-- name: log_lines
-- A run's log lines after a sequence number, in order.
SELECT seq, ts, level, step, message, fields, attempt FROM run_logs
WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s;

-- name: checkpoint_run
-- The run a task serves, for a checkpoint call's lease check.
SELECT id, deployment_id, lease_hash, status FROM runs WHERE task_id = %s;

-- name: put_checkpoint
-- One LangGraph checkpoint, stored whole; storing it again replaces it.
INSERT INTO run_checkpoints (run_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type,
                             checkpoint, metadata_type, metadata, progress)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (run_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
    parent_checkpoint_id = EXCLUDED.parent_checkpoint_id, checkpoint_type = EXCLUDED.checkpoint_type,
    checkpoint = EXCLUDED.checkpoint, metadata_type = EXCLUDED.metadata_type,
    metadata = EXCLUDED.metadata, progress = EXCLUDED.progress;

-- name: put_regular_write
-- A pending write on a regular channel (idx >= 0): kept once, as LangGraph's savers do.
INSERT INTO run_checkpoint_writes (run_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel,
                                   value_type, value)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING;

-- name: put_special_write
-- A pending write on a special channel (errors, interrupts: idx < 0): replaced.
INSERT INTO run_checkpoint_writes (run_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel,
                                   value_type, value)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
    channel = EXCLUDED.channel, value_type = EXCLUDED.value_type, value = EXCLUDED.value,
    task_path = EXCLUDED.task_path;

-- name: checkpoints
-- A run's checkpoints in a namespace, newest first: one checkpoint id when given, and only those
-- before a checkpoint id when given.
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type, checkpoint, metadata_type,
       metadata, progress
FROM run_checkpoints
WHERE run_id = %s AND checkpoint_ns = %s
  AND (%s::text IS NULL OR checkpoint_id = %s)
  AND (%s::text IS NULL OR checkpoint_id < %s)
ORDER BY checkpoint_id DESC LIMIT %s;

-- name: checkpoint_writes
-- The pending writes against some checkpoints of a run.
SELECT checkpoint_id, task_id, idx, task_path, channel, value_type, value
FROM run_checkpoint_writes
WHERE run_id = %s AND checkpoint_ns = %s AND checkpoint_id = ANY(%s::text[])
ORDER BY task_path, task_id, idx;

-- name: idle_unfinished_runs
-- Unfinished runs untouched since a moment, the longest idle first (the reconciliation).
SELECT id, task_id FROM runs
WHERE status IN ('queued', 'running') AND task_id IS NOT NULL AND updated_at < %s
ORDER BY updated_at LIMIT %s;

-- name: unfinished_deployments
-- The deployments that have unfinished runs (the reconciliation asks which are uninstalled).
SELECT DISTINCT deployment_id FROM runs WHERE status IN ('queued', 'running', 'awaiting_approval');

-- name: unfinished_runs_of
-- Unfinished runs of some deployments.
SELECT id, task_id FROM runs
WHERE status IN ('queued', 'running', 'awaiting_approval') AND deployment_id = ANY(%s::text[]) LIMIT %s;

-- name: dispatch_task
-- A pushed task as the dispatch checks it: its state, attempt and deployment, and whether it is
-- due (a lease that ran out counts as due).
SELECT t.state, t.attempt, t.deployment_id, coalesce(t.available_at <= now(), false) AS due
FROM tasks t WHERE t.id = %s;

-- used by billing
-- name: active_runs_of_org
-- An org's runs that have not ended (the kill switch cancels them).
SELECT id, agent_id FROM runs WHERE org_id = %s AND status IN ('queued', 'running', 'awaiting_approval') ORDER BY created_at;

-- used by approvals
-- name: park_run
-- A run stopped at gated calls: it waits for decisions holding no lease (docs/APPROVALS.md).
UPDATE runs SET status = 'awaiting_approval', lease_hash = NULL, worker = NULL, updated_at = now()
WHERE id = %s AND status = 'running';

-- name: resume_run
-- Decisions are in: the run is queued again on a new task (its checkpoints say where it stopped).
UPDATE runs SET status = 'queued', task_id = %s, updated_at = now()
WHERE id = %s AND status = 'awaiting_approval'
RETURNING id;

-- name: awaiting_run_for_update
SELECT id, org_id, deployment_id, max_attempts, status FROM runs WHERE id = %s FOR UPDATE;

-- name: run_starter
SELECT created_by FROM runs WHERE id = %s;

-- name: add_remediation
UPDATE runs SET remediation = coalesce(remediation, '[]'::jsonb) || jsonb_build_array(%s::jsonb),
                updated_at = now()
WHERE id = %s;

-- used by memory
-- name: memory_run
-- The run a task serves, with its org, agent and version, for a memory call's lease check.
SELECT id, org_id, agent_id, version, deployment_id, lease_hash, status FROM runs WHERE task_id = %s;
