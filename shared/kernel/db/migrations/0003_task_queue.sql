-- The task queue (docs/QUEUE.md): one row per task, the source of truth for leases and attempts
-- in both modes. No foreign keys: the run record that a task serves carries them, and the queue
-- stays cheap to write.
CREATE TABLE tasks (
    id                text PRIMARY KEY,
    kind              text NOT NULL,
    payload           jsonb NOT NULL,
    run_id            text,
    org_id            text NOT NULL,
    deployment_id     text,
    state             text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'leased', 'done', 'dead', 'cancelled')),
    attempt           integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    -- When the task can next be claimed: its (possibly delayed) start while queued, the lease
    -- expiry while leased, NULL once final. One column for both makes "claimable" a single
    -- range scan of one partial index, expired leases included.
    available_at      timestamptz,
    lease_token       text,
    lease_owner       text,
    lease_expires_at  timestamptz,
    cancel_requested  boolean NOT NULL DEFAULT false,
    last_error        text,
    -- gcp mode: the delivery attempt last pushed to Cloud Tasks (push deliveries are deduplicated
    -- by name, this avoids asking again).
    pushed_attempt    integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CHECK ((state IN ('queued', 'leased')) = (available_at IS NOT NULL)),
    CHECK ((state = 'leased') = (lease_token IS NOT NULL))
);

-- Claimable rows only: workers of any deployment, and workers of one deployment.
CREATE INDEX tasks_claimable_idx ON tasks (available_at) WHERE state IN ('queued', 'leased');
CREATE INDEX tasks_claimable_deployment_idx ON tasks (deployment_id, available_at)
    WHERE state IN ('queued', 'leased');
CREATE INDEX tasks_run_idx ON tasks (run_id) WHERE run_id IS NOT NULL;
