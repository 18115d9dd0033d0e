-- Billing (issue 16, docs/BILLING.md): partial refunds and subscription fees. Owned by shared/billing.

-- Refunds of a run's charge, full or partial, each a ledger transaction of its own that reverses
-- the charge's split in proportion. Together they never pass the run's charge: the service locks
-- the run's usage row while it decides, and the trigger below refuses a refund that would pass it.
CREATE TABLE billing_refunds (
    id                text PRIMARY KEY,
    run_id            text NOT NULL REFERENCES billing_usage (run_id),
    org_id            text NOT NULL,
    developer_org_id  text NOT NULL,
    amount_micros     bigint NOT NULL CHECK (amount_micros > 0),
    developer_micros  bigint NOT NULL CHECK (developer_micros >= 0),
    platform_micros   bigint NOT NULL CHECK (platform_micros >= 0),
    transaction_id    text NOT NULL UNIQUE,
    reason            text NOT NULL,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The month the refund was made (UTC): its credit line is on that month's invoice, or on the
    -- next one when it committed after that month's cycle (as late usage does).
    period            date NOT NULL,
    -- Insertion order: a cycle credits the refunds up to its watermark (as for billing_usage).
    seq               bigserial NOT NULL UNIQUE,
    CHECK (developer_micros + platform_micros = amount_micros)
);
CREATE INDEX billing_refunds_run_idx ON billing_refunds (run_id);
CREATE INDEX billing_refunds_org_idx ON billing_refunds (org_id, created_at);

CREATE FUNCTION billing_refunds_within_charge() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    refunded bigint;
    charged bigint;
BEGIN
    SELECT coalesce(sum(amount_micros), 0) INTO refunded FROM billing_refunds WHERE run_id = NEW.run_id;
    SELECT charge_micros INTO charged FROM billing_usage WHERE run_id = NEW.run_id;
    IF refunded > charged THEN
        RAISE EXCEPTION 'refunds of run % (%) pass its charge (%)', NEW.run_id, refunded, charged
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER billing_refunds_within_charge AFTER INSERT ON billing_refunds
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing_refunds_within_charge();
CREATE TRIGGER billing_refunds_no_update BEFORE UPDATE OR DELETE ON billing_refunds
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();

-- Subscription fees: one row per deployment and closed month, inserted by the billing cycle with
-- its ledger transaction in one statement. The key makes the fee exactly once per deployment and
-- month, however often (or however concurrently) the cycle runs.
CREATE TABLE billing_subscriptions (
    deployment_id     text NOT NULL,
    period            date NOT NULL,
    org_id            text NOT NULL,
    agent_id          text NOT NULL,
    version           text NOT NULL,
    developer_org_id  text NOT NULL,
    active_days       integer NOT NULL CHECK (active_days > 0),
    period_days       integer NOT NULL CHECK (period_days BETWEEN 28 AND 31),
    monthly_micros    bigint NOT NULL CHECK (monthly_micros > 0),
    charge_micros     bigint NOT NULL CHECK (charge_micros > 0),
    developer_micros  bigint NOT NULL CHECK (developer_micros >= 0),
    platform_micros   bigint NOT NULL CHECK (platform_micros >= 0),
    transaction_id    text NOT NULL UNIQUE,
    charged_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, period),
    CHECK (developer_micros + platform_micros = charge_micros)
);
CREATE INDEX billing_subscriptions_org_idx ON billing_subscriptions (org_id, period);
CREATE INDEX billing_subscriptions_developer_idx ON billing_subscriptions (developer_org_id, period);
CREATE TRIGGER billing_subscriptions_no_update BEFORE UPDATE OR DELETE ON billing_subscriptions
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();

-- A cycle's refunds watermark (as through_seq/after_seq for usage), and refund credit lines.
ALTER TABLE billing_cycles
    ADD COLUMN refunds_through bigint NOT NULL DEFAULT 0,
    ADD COLUMN refunds_after   bigint NOT NULL DEFAULT 0;
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_kind_check;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_kind_check
    CHECK (kind IN ('usage', 'adjustment', 'subscription', 'refund'));
