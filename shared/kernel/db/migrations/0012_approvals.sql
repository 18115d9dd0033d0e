-- Approvals (docs/APPROVALS.md): human-in-the-loop remediation bound to the exact action, the
-- org's approval policy, the decisions of each approver; notifications and their deliveries; the
-- local cloud-resource inventory that remediations act on; and the two run statuses a gated run
-- passes through (``awaiting_approval``, not final; ``remediated``, final).
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (status IN (
    'queued', 'running', 'awaiting_approval', 'succeeded', 'remediated', 'failed', 'cancelled', 'dead'));
ALTER TABLE runs DROP CONSTRAINT runs_check;
ALTER TABLE runs ADD CONSTRAINT runs_finished_check CHECK (
    (status IN ('succeeded', 'remediated', 'failed', 'cancelled', 'dead')) = (finished_at IS NOT NULL));
-- What the approved actions of a run did: [{approval_id, tool, outcome, monthly_saving_micros}], and
-- refusals of a call that no longer matched its approval ({"stale_approval": [...]}).
ALTER TABLE runs ADD COLUMN remediation jsonb;

-- One row per org that changed the defaults (72 h expiry, reminder 12 h before, one approver,
-- the run's starter may not approve its actions).
CREATE TABLE approval_policies (
    org_id               text PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    expiry_seconds       integer NOT NULL CHECK (expiry_seconds BETWEEN 60 AND 2592000),
    reminder_seconds     integer NOT NULL CHECK (reminder_seconds >= 0),
    required_approvals   integer NOT NULL CHECK (required_approvals BETWEEN 1 AND 10),
    starter_may_approve  boolean NOT NULL,
    updated_by           text NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE approvals (
    id                     text PRIMARY KEY,
    org_id                 text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    run_id                 text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    agent_id               text NOT NULL,
    version                text NOT NULL,
    package_digest         text NOT NULL,
    tool                   text NOT NULL,
    -- The call's arguments, and the whole action in RFC 8785 canonical JSON with its SHA-256: the
    -- gated tool executes only for a call whose canonical action hashes the same.
    arguments              jsonb NOT NULL,
    action_canonical       text NOT NULL,
    action_hash            text NOT NULL CHECK (action_hash ~ '^[0-9a-f]{64}$'),
    interrupt_id           text NOT NULL,
    impact                 jsonb NOT NULL DEFAULT '{}',
    monthly_saving_micros  bigint NOT NULL DEFAULT 0,
    requested_by           text NOT NULL,  -- who started the run
    status                 text NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    required_approvals     integer NOT NULL CHECK (required_approvals >= 1),
    starter_may_approve    boolean NOT NULL,
    decided_by             text,
    decided_at             timestamptz,
    decision_comment       text,
    expires_at             timestamptz NOT NULL,
    remind_at              timestamptz,
    reminded_at            timestamptz,
    -- Execution of an approved action: claimed once (execution_started_at), then its outcome.
    execution_started_at   timestamptz,
    executed_at            timestamptz,
    execution              jsonb,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, interrupt_id),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX approvals_org_page_idx ON approvals (org_id, created_at DESC, id DESC);
CREATE INDEX approvals_pending_idx ON approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_run_idx ON approvals (run_id);

-- One vote per approver; the approval's own row decides (under its lock) when enough are in.
CREATE TABLE approval_votes (
    approval_id  text NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,
    approver     text NOT NULL,
    decision     text NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (approval_id, approver)
);

-- The local stand-in for an org's cloud (seeded from the FOCUS data's resources): what the
-- local cloud-resources adapter acts on, readable by the org.
CREATE TABLE cloud_resources (
    org_id        text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    resource_id   text NOT NULL,
    name          text,
    service       text,
    region        text,
    state         text NOT NULL DEFAULT 'running',
    machine_type  text,
    monthly_cost_micros bigint NOT NULL DEFAULT 0,
    history       jsonb NOT NULL DEFAULT '[]',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, resource_id)
);

-- Notifications: one row per recipient and event (in-app), and an outbox of deliveries per
-- channel (email, slack) retried with backoff.
CREATE TABLE notifications (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id     text NOT NULL,
    event       text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    read_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_idx ON notifications (user_id, created_at DESC, id DESC);

CREATE TABLE notification_deliveries (
    id            text PRIMARY KEY,
    org_id        text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    channel       text NOT NULL CHECK (channel IN ('email', 'slack')),
    destination   text NOT NULL,
    event         text NOT NULL,
    payload       jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (next_attempt_at) WHERE status = 'pending';

-- Slack interactive callbacks already processed (replay refusal), kept past the 5-minute window.
CREATE TABLE slack_action_nonces (
    signature   text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Per-org channel settings (Slack incoming webhook URL and signing secret are sealed).
CREATE TABLE notification_settings (
    org_id               text PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    email_enabled        boolean NOT NULL DEFAULT true,
    slack_webhook_sealed bytea,
    slack_signing_sealed bytea,
    slack_bot_sealed     bytea,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
