-- The install flow: the deployment life cycle, data-plane identity and health.
ALTER TABLE deployments
    ADD CONSTRAINT deployments_status_check CHECK (status IN (
        'pending', 'provisioning', 'ready', 'unreachable', 'failed', 'uninstalled', 'upgrade_pending_consent')),
    ADD COLUMN status_reason         text,
    -- While an upgrade waits for consent: the version asked for, the permissions it adds, and the
    -- state to return to once the admin decides.
    ADD COLUMN pending_version       text,
    ADD COLUMN pending_permissions   jsonb,
    ADD COLUMN status_before_upgrade text,
    ADD COLUMN dataplane_key_id      text,
    ADD COLUMN dataplane             jsonb,
    ADD COLUMN registered_at         timestamptz,
    ADD COLUMN last_heartbeat_at     timestamptz,
    ADD COLUMN uninstalled_at        timestamptz;

CREATE INDEX deployments_org_page_idx ON deployments (org_id, created_at DESC, id DESC);
CREATE INDEX deployments_heartbeat_idx ON deployments (last_heartbeat_at) WHERE status = 'ready';
