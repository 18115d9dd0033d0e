-- The PostgreSQL task queue's statements (PgTaskQueue), run through the kernel's Tx: parameters
-- are positional (%s), a value used twice is passed twice. {deployment_filter} and {ack} are
-- filled from fixed text (the named blocks below):
-- the claimer's deployment condition, and the asynchronous-commit condition (ASYNC_COMMIT) that
-- acknowledgements carry unless the queue was built with durable_acks.

-- name: enqueue
-- Add a task and notify its waiting claimers (on commit). Positional: it is held back in the
-- caller's transaction with Tx.defer.
WITH ins AS (
    INSERT INTO tasks (id, kind, payload, run_id, org_id, deployment_id, max_attempts, available_at)
    VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, coalesce(%s::timestamptz, now()))
    RETURNING id
)
SELECT pg_notify(%s, %s) FROM ins;

-- name: claim
-- Parameters: lease seconds, lease seconds, worker, [the deployment filter's], limit.
-- Lease up to limit due tasks. The candidates are an uncorrelated ARRAY(subquery) on purpose:
-- PostgreSQL evaluates it exactly once (an InitPlan), whereas a join against a LIMIT ... SKIP
-- LOCKED subquery may be rescanned and lease more rows than it returns. The UPDATE then sees the
-- rows as locked. A row whose lease expired after its last allowed attempt (queued rows always
-- have attempts left), or whose cancellation was requested, is closed instead of leased; the
-- caller then claims again.
UPDATE tasks AS t SET
    state = CASE WHEN t.cancel_requested THEN 'cancelled'
                 WHEN t.attempt >= t.max_attempts THEN 'dead' ELSE 'leased' END,
    attempt = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN t.attempt
                   ELSE t.attempt + 1 END,
    available_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN NULL
                        ELSE now() + make_interval(secs => %s) END,
    lease_expires_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN NULL
                            ELSE now() + make_interval(secs => %s) END,
    lease_token = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN NULL
                       ELSE gen_random_uuid()::text END,
    lease_owner = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN t.lease_owner
                       ELSE %s END,
    last_error = CASE WHEN NOT t.cancel_requested AND t.attempt >= t.max_attempts
                      THEN 'lease expired on the last attempt (' || t.attempt || ')'
                      ELSE t.last_error END,
    finished_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN now() END
WHERE t.id = ANY(ARRAY(
    SELECT id FROM tasks
    WHERE state IN ('queued', 'leased') AND available_at <= now() {deployment_filter}
    ORDER BY available_at
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)) {ack}
RETURNING t.state, t.id, t.kind, t.payload, t.run_id, t.org_id, t.deployment_id, t.attempt,
          t.lease_token, extract(epoch FROM t.lease_expires_at)::float8 AS lease_expires_at;

-- name: heartbeat
-- Parameters: lease seconds, lease seconds, task id, lease token.
UPDATE tasks SET available_at = now() + make_interval(secs => %s),
                 lease_expires_at = now() + make_interval(secs => %s)
WHERE id = %s AND lease_token = %s AND state = 'leased' {ack}
RETURNING cancel_requested, extract(epoch FROM lease_expires_at)::float8 AS lease_expires_at;

-- name: complete
-- Positional: inside a caller's transaction it is held back with Tx.defer.
UPDATE tasks SET state = 'done', available_at = NULL, lease_token = NULL, lease_expires_at = NULL,
                 finished_at = now()
WHERE id = %s AND lease_token = %s AND state = 'leased' {ack}
RETURNING id;

-- name: complete_many
-- Task ids and their lease tokens, in the same order.
UPDATE tasks AS t SET state = 'done', available_at = NULL, lease_token = NULL, lease_expires_at = NULL,
                      finished_at = now()
FROM unnest(%s::text[], %s::text[]) AS c(id, token)
WHERE t.id = c.id AND t.lease_token = c.token AND t.state = 'leased' {ack}
RETURNING t.id;

-- name: lock_lease
SELECT attempt, max_attempts, cancel_requested FROM tasks
WHERE id = %s AND lease_token = %s AND state = 'leased'
FOR UPDATE;

-- name: record_failure
-- Parameters: state, error, state, backoff seconds, state, task id (positional: it is held back
-- in the failure's transaction with Tx.defer).
UPDATE tasks SET state = %s, last_error = %s,
                 available_at = CASE WHEN %s = 'queued' THEN now() + make_interval(secs => %s) END,
                 lease_token = NULL, lease_expires_at = NULL,
                 finished_at = CASE WHEN %s = 'queued' THEN NULL ELSE now() END
WHERE id = %s {ack};

-- name: request_cancel
-- A queued task, or a leased one whose lease already ran out (nobody may be working on it), is
-- cancelled at once; a live lease only gets the flag its worker sees in heartbeat.
UPDATE tasks SET
    state = CASE WHEN state = 'queued' OR available_at <= now() THEN 'cancelled' ELSE state END,
    cancel_requested = true,
    lease_token = CASE WHEN state = 'queued' OR available_at <= now() THEN NULL ELSE lease_token END,
    lease_expires_at = CASE WHEN state = 'queued' OR available_at <= now() THEN NULL
                            ELSE lease_expires_at END,
    finished_at = CASE WHEN state = 'queued' OR available_at <= now() THEN now() ELSE finished_at END,
    available_at = CASE WHEN state = 'queued' OR available_at <= now() THEN NULL ELSE available_at END
WHERE id = %s AND state IN ('queued', 'leased')
RETURNING state;

-- name: next_due
-- Seconds until the next claimable row is due (a delayed start, a retry's backoff, a lease's expiry).
SELECT extract(epoch FROM min(available_at) - now())::float8 FROM tasks
WHERE state IN ('queued', 'leased') {deployment_filter};

-- name: get
SELECT id, kind, payload, run_id, org_id, deployment_id, state, attempt, max_attempts, available_at,
       lease_owner, lease_expires_at, cancel_requested, last_error, created_at, finished_at
FROM tasks WHERE id = %s;

-- name: mark_pushed
-- The gcp queue (CloudTasksQueue): delivery attempt %s of task %s was pushed to Cloud Tasks.
UPDATE tasks SET pushed_attempt = greatest(coalesce(pushed_attempt, 0), %s) WHERE id = %s;

-- name: due_for_push
-- The gcp queue: due deliveries not pushed yet (expired leases to redeliver, tasks whose earlier
-- push failed). {kind_filter} is empty or the fixed condition on kinds the queue pushes.
SELECT id, kind, run_id, org_id, deployment_id, attempt FROM tasks
WHERE state IN ('queued', 'leased') AND available_at <= now()
  AND coalesce(pushed_attempt, 0) <= attempt {kind_filter}
ORDER BY available_at
LIMIT %s;

-- name: claim_deployment_filter
-- The claim's {deployment_filter} when a claimer serves one deployment (its parameter comes
-- between the worker and the limit).
AND deployment_id = %s

-- name: next_due_deployment_filter
-- next_due's {deployment_filter} when a claimer serves one deployment.
AND deployment_id = %s

-- name: push_kind_filter
-- due_for_push's {kind_filter} when the gcp queue pushes only some kinds.
AND kind = ANY(%s)

-- name: listen
-- The listener's subscription; {} is the channel, quoted as an identifier (psycopg.sql).
LISTEN {}

-- name: notify
-- Wake every waiting claimer (the queue's close() stops its listener this way).
SELECT pg_notify(%s, %s)

-- name: ping
-- The LISTEN connection is still there (notifies() may just have timed out).
SELECT 1;

-- name: async_ack
-- What fills {ack} unless the queue was built with durable_acks: the kernel's asynchronous-commit
-- condition ({async_commit} is shared.kernel.db.database.ASYNC_COMMIT).
AND {async_commit}
