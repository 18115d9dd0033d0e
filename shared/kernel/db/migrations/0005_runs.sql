-- Agent runs (docs/RUNS.md): the run record, its structured logs, and the LangGraph checkpoints a
-- redelivered run resumes from. The task queue (0003) delivers each run; the run row is the source
-- of truth for its outcome.
CREATE TABLE runs (
    id                text PRIMARY KEY,
    org_id            text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    agent_id          text NOT NULL REFERENCES agents (id),
    deployment_id     text NOT NULL REFERENCES deployments (id),
    -- The agent version the run executes: the deployment's version when the run was created.
    version           text NOT NULL,
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead')),
    inputs            jsonb NOT NULL DEFAULT '{}',
    outputs           jsonb,
    error             text,
    -- records_processed, cpu_seconds, duration_ms, steps, ... written once, by the completion.
    metrics           jsonb,
    task_id           text,
    attempt           integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    cancel_requested  boolean NOT NULL DEFAULT false,
    -- SHA-256 of the lease token of the delivery currently (or last) working on the run: only that
    -- holder may write logs, checkpoints and the completion.
    lease_hash        text,
    worker            text,
    -- SHA-256 of the lease whose completion was recorded, and the answer it got: a retried or
    -- duplicated completion of that lease is answered again and changes nothing.
    completion_lease  text,
    completion        jsonb,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    CHECK ((status IN ('succeeded', 'failed', 'cancelled', 'dead')) = (finished_at IS NOT NULL))
);

CREATE INDEX runs_org_page_idx ON runs (org_id, created_at DESC, id DESC);
CREATE INDEX runs_deployment_idx ON runs (deployment_id, created_at DESC);
CREATE UNIQUE INDEX runs_task_idx ON runs (task_id) WHERE task_id IS NOT NULL;
-- The reconciliation sweep looks at unfinished runs only.
CREATE INDEX runs_active_idx ON runs (updated_at) WHERE status IN ('queued', 'running');

-- Client-numbered lines: a retried batch inserts nothing twice.
CREATE TABLE run_logs (
    run_id   text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq      bigint NOT NULL CHECK (seq >= 0),
    ts       timestamptz NOT NULL,
    level    text NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
    step     text NOT NULL,
    message  text NOT NULL,
    fields   jsonb NOT NULL DEFAULT '{}',
    attempt  integer NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, seq)
);

-- LangGraph checkpoints (thread = run), stored opaque: the data plane serialises them and the
-- control plane never imports LangGraph. ``progress`` carries the run's counters at that point
-- (records processed, CPU seconds) so a resumed run continues counting where it left off.
CREATE TABLE run_checkpoints (
    run_id                text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    checkpoint_ns         text NOT NULL DEFAULT '',
    checkpoint_id         text NOT NULL,
    parent_checkpoint_id  text,
    checkpoint_type       text NOT NULL,
    checkpoint            bytea NOT NULL,
    metadata_type         text NOT NULL,
    metadata              bytea NOT NULL,
    progress              jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, checkpoint_ns, checkpoint_id)
);

CREATE TABLE run_checkpoint_writes (
    run_id         text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    checkpoint_ns  text NOT NULL DEFAULT '',
    checkpoint_id  text NOT NULL,
    task_id        text NOT NULL,
    idx            integer NOT NULL,
    task_path      text NOT NULL DEFAULT '',
    channel        text NOT NULL,
    value_type     text NOT NULL,
    value          bytea NOT NULL,
    PRIMARY KEY (run_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
