-- Billing (issue 16, docs/BILLING.md): what each run used and was charged, a double-entry
-- ledger that only grows, and each org's spend limits. Owned by shared/billing.

-- One row per charged run outcome: the metering that produced the charge (the usage API and the
-- invoices read it). The run's id is the key: a run is metered, and so charged, exactly once.
CREATE TABLE billing_usage (
    run_id            text PRIMARY KEY,
    org_id            text NOT NULL,
    agent_id          text NOT NULL,
    version           text NOT NULL,
    developer_org_id  text NOT NULL,
    outcome           text NOT NULL,
    records           bigint NOT NULL CHECK (records >= 0),
    cpu_ms            bigint NOT NULL CHECK (cpu_ms >= 0),
    base_micros       bigint NOT NULL CHECK (base_micros >= 0),
    records_micros    bigint NOT NULL CHECK (records_micros >= 0),
    cpu_micros        bigint NOT NULL CHECK (cpu_micros >= 0),
    capped            boolean NOT NULL DEFAULT false,
    charge_micros     bigint NOT NULL CHECK (charge_micros >= 0),
    developer_micros  bigint NOT NULL CHECK (developer_micros >= 0),
    platform_micros   bigint NOT NULL CHECK (platform_micros >= 0),
    period            date NOT NULL,
    charged_at        timestamptz NOT NULL DEFAULT now(),
    -- Insertion order: an invoice covers the rows up to its cycle's watermark (invoices below).
    seq               bigserial NOT NULL UNIQUE,
    CHECK (developer_micros + platform_micros = charge_micros)
);
CREATE INDEX billing_usage_org_idx ON billing_usage (org_id, charged_at);
CREATE INDEX billing_usage_developer_idx ON billing_usage (developer_org_id, period);

-- The ledger. A transaction groups entries that sum to zero; an entry moves `amount` micro-dollars
-- into `account` (positive: debit, negative: credit). Accounts are named, not rows:
--   customer:<org_id>     what the org owes the platform for its usage (debit balance)
--   developer:<org_id>    what the platform owes a developer org (credit balance)
--   platform:revenue      the platform's 20 % fee
--   stripe:clearing       money collected through Stripe, not yet paid out
--   payouts:<org_id>      money transferred to a developer's Stripe Connect account
CREATE TABLE ledger_transactions (
    id          text PRIMARY KEY,
    kind        text NOT NULL,
    org_id      text NOT NULL,
    run_id      text,
    memo        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- A run is charged once and refunded at most once, however often completion is retried.
CREATE UNIQUE INDEX ledger_transactions_run_once ON ledger_transactions (kind, run_id) WHERE run_id IS NOT NULL;
CREATE INDEX ledger_transactions_org_idx ON ledger_transactions (org_id, created_at);

CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    transaction_id  text NOT NULL REFERENCES ledger_transactions (id),
    account         text NOT NULL CHECK (account ~ '^(customer|developer|payouts):[A-Za-z0-9_.-]+$'
                                          OR account IN ('platform:revenue', 'stripe:clearing')),
    amount          bigint NOT NULL CHECK (amount <> 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_transaction_idx ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account, id);

-- The database refuses a transaction that does not balance: checked at COMMIT (deferred), once
-- all of its entries are in.
CREATE FUNCTION ledger_transaction_balances() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
BEGIN
    SELECT coalesce(sum(amount), 0) INTO total FROM ledger_entries WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance (sum %)', NEW.transaction_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER ledger_entries_balance AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balances();

-- Append-only: corrections are new transactions, never edits.
CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_transactions_no_update BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER billing_usage_no_update BEFORE UPDATE OR DELETE ON billing_usage
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();

-- Each org's spend limits (absent: no budget, no default cap, not frozen).
CREATE TABLE billing_settings (
    org_id                text PRIMARY KEY,
    monthly_budget_micros bigint CHECK (monthly_budget_micros >= 0),
    default_run_cap_micros bigint CHECK (default_run_cap_micros > 0),
    frozen                boolean NOT NULL DEFAULT false,
    frozen_reason         text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- An org's spend in one calendar month (UTC): charged, and reserved by runs still going. Its row is
-- locked by every reservation, so runs that start together are admitted one after another.
CREATE TABLE billing_periods (
    org_id           text NOT NULL,
    period           date NOT NULL,
    charged_micros   bigint NOT NULL DEFAULT 0,
    reserved_micros  bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    alerted_percent  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, period)
);

-- The most a running run may still be charged (its cap), held against the budget until it ends.
CREATE TABLE billing_reservations (
    run_id        text PRIMARY KEY,
    org_id        text NOT NULL,
    period        date NOT NULL,
    cap_micros    bigint NOT NULL CHECK (cap_micros > 0),
    used_micros   bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_reservations_org_idx ON billing_reservations (org_id);

-- Invoices. A billing cycle closes a month: it takes a watermark (the highest usage seq, read
-- under a SHARE lock so that every row below it is committed) and invoices each org's usage rows
-- between the previous cycle's watermark and this one. A row committed after a cycle (late usage)
-- is above its watermark and lands on the next invoice, as an adjustment when it belongs to an
-- earlier month; nothing is lost and nothing is invoiced twice.
CREATE TABLE billing_cycles (
    period        date PRIMARY KEY,
    through_seq   bigint NOT NULL,
    after_seq     bigint NOT NULL,
    closed_at     timestamptz NOT NULL DEFAULT now(),
    invoiced_at   timestamptz  -- set once every org's invoice of the cycle is written
);

-- The Stripe customer of an org, created once.
CREATE TABLE billing_customers (
    org_id              text PRIMARY KEY,
    stripe_customer_id  text NOT NULL UNIQUE,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoices (
    id                 text PRIMARY KEY,
    org_id             text NOT NULL,
    period             date NOT NULL,
    status             text NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'payment_failed', 'void')),
    total_micros       bigint NOT NULL,
    total_cents        bigint NOT NULL,
    stripe_invoice_id  text UNIQUE,
    note               text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    finalized_at       timestamptz,
    paid_at            timestamptz,
    payment_failed_at  timestamptz,
    UNIQUE (org_id, period)
);
CREATE INDEX invoices_org_idx ON invoices (org_id, period DESC);
CREATE INDEX invoices_failed_idx ON invoices (payment_failed_at) WHERE status = 'payment_failed';

CREATE TABLE invoice_lines (
    invoice_id     text NOT NULL REFERENCES invoices (id),
    line_no        integer NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('usage', 'adjustment', 'subscription')),
    agent_id       text,
    usage_period   date,
    run_count      bigint NOT NULL DEFAULT 0,
    description    text NOT NULL,
    amount_micros  bigint NOT NULL,
    amount_cents   bigint NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

-- Stripe webhook events already handled (idempotent on the event id).
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- Developer payouts: each developer org's Stripe Connect account, and one payout per org and month
-- (a transfer of its balance when it reached the minimum; smaller balances carry over).
CREATE TABLE payout_accounts (
    org_id             text PRIMARY KEY,
    stripe_account_id  text NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payouts (
    id                  text PRIMARY KEY,
    org_id              text NOT NULL,
    period              date NOT NULL,
    amount_micros       bigint NOT NULL CHECK (amount_micros > 0),
    amount_cents        bigint NOT NULL CHECK (amount_cents > 0),
    status              text NOT NULL CHECK (status IN ('pending', 'paid', 'failed')),
    stripe_transfer_id  text UNIQUE,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    paid_at             timestamptz,
    UNIQUE (org_id, period)
);
