-- Webhooks: subscriptions, the event outbox, per-webhook deliveries and every delivery attempt.
CREATE TABLE webhooks (
    id               text PRIMARY KEY,
    org_id           text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    url              text NOT NULL,
    events           jsonb NOT NULL CHECK (jsonb_typeof(events) = 'array' AND jsonb_array_length(events) > 0),
    description      text NOT NULL DEFAULT '',
    -- The whsec_ signing secret, sealed by the SecretBox port (never stored in clear).
    secret_sealed    bytea NOT NULL,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason  text,
    disabled_at      timestamptz,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_org_page_idx ON webhooks (org_id, created_at DESC, id DESC);

-- One row per emitted event that at least one webhook subscribed to; its id is the webhook-id header.
CREATE TABLE webhook_events (
    id           text PRIMARY KEY,
    org_id       text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    type         text NOT NULL,
    data         jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_age_idx ON webhook_events (occurred_at);

-- One event to one webhook. While pending, next_attempt_at is when it is due (or, while an attempt
-- is in flight, when that attempt's lease runs out); lease_token names the dispatcher holding it.
CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,
    event_id          text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    webhook_id        text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    org_id            text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz,
    lease_token       text,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    UNIQUE (event_id, webhook_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, status);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id                text PRIMARY KEY,
    delivery_id       text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    webhook_id        text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    org_id            text NOT NULL,
    attempt           integer NOT NULL CHECK (attempt >= 1),
    status_code       integer,
    error             text,
    response_excerpt  text,
    duration_ms       integer NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    UNIQUE (delivery_id, attempt)
);
CREATE INDEX webhook_attempts_page_idx ON webhook_attempts (webhook_id, started_at DESC, id DESC);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id);
