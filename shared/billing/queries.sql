-- The billing context's named statements (docs/BILLING.md). Money is integer micro-dollars.

-- name: charge_run
-- Meter a run's outcome and post its charge, once: the usage row is keyed by the run, so a retried
-- completion inserts nothing and nothing follows. The metered amount is capped by the run's
-- reservation (its per-run maximum) when it holds one; the developer gets 80 % of the charge
-- rounded down, the platform the rest. The charge is added to the org's month and posted as one
-- balanced ledger transaction (customer debit = developer share + platform fee). The run has
-- ended, so its reservation goes too (as ``release`` does): its month's row is changed once, by
-- ``spent`` when the charge falls in the same month, else by ``unreserved``. One statement, sent
-- with the completion's commit.
WITH priced AS (
    SELECT least(%s::bigint, coalesce((SELECT cap_micros FROM billing_reservations WHERE run_id = %s),
                                      %s::bigint)) AS charge
), split AS (
    SELECT charge, charge * 80 / 100 AS developer, charge - charge * 80 / 100 AS platform FROM priced
), metered AS (
    INSERT INTO billing_usage (run_id, org_id, agent_id, version, developer_org_id, outcome, records, cpu_ms,
                               base_micros, records_micros, cpu_micros, capped, charge_micros, developer_micros,
                               platform_micros, period)
    SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, split.charge < %s::bigint, split.charge, split.developer,
           split.platform, %s::date
    FROM split
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, org_id, developer_org_id, charge_micros, developer_micros, platform_micros, period
), gone AS (
    DELETE FROM billing_reservations WHERE run_id = %s RETURNING org_id, period, cap_micros
), spent AS (
    INSERT INTO billing_periods AS p (org_id, period, charged_micros)
    SELECT m.org_id, m.period, m.charge_micros FROM metered m
    ON CONFLICT (org_id, period) DO UPDATE SET charged_micros = p.charged_micros + EXCLUDED.charged_micros,
        reserved_micros = greatest(0, p.reserved_micros - coalesce(
            (SELECT g.cap_micros FROM gone g WHERE g.org_id = p.org_id AND g.period = p.period), 0))
    RETURNING p.org_id
), unreserved AS (
    UPDATE billing_periods p SET reserved_micros = greatest(0, p.reserved_micros - g.cap_micros)
    FROM gone g
    WHERE p.org_id = g.org_id AND p.period = g.period
      AND NOT EXISTS (SELECT 1 FROM metered m WHERE m.org_id = g.org_id AND m.period = g.period)
    RETURNING p.org_id
), posted AS (
    INSERT INTO ledger_transactions (id, kind, org_id, run_id, memo)
    SELECT %s, 'run_charge', m.org_id, m.run_id, jsonb_build_object('developer_org_id', m.developer_org_id)
    FROM metered m WHERE m.charge_micros > 0
    RETURNING id
)
INSERT INTO ledger_entries (transaction_id, account, amount)
SELECT t.id, e.account, e.amount
FROM posted t CROSS JOIN metered m
CROSS JOIN LATERAL (VALUES ('customer:' || m.org_id, m.charge_micros),
                           ('developer:' || m.developer_org_id, -m.developer_micros),
                           ('platform:revenue', -m.platform_micros)) AS e (account, amount)
WHERE e.amount <> 0;

-- name: insert_transaction
-- A ledger transaction's header; its entries follow in the same database transaction.
INSERT INTO ledger_transactions (id, kind, org_id, run_id, memo) VALUES (%s, %s, %s, %s, %s::jsonb)
ON CONFLICT (kind, run_id) WHERE run_id IS NOT NULL DO NOTHING
RETURNING id;

-- name: insert_entries
-- A transaction's entries (arrays of accounts and amounts); the deferred trigger checks the sum.
INSERT INTO ledger_entries (transaction_id, account, amount)
SELECT %s, account, amount FROM unnest(%s::text[], %s::bigint[]) AS e (account, amount);

-- name: usage_of_run
SELECT run_id, org_id, agent_id, version, developer_org_id, outcome, records, cpu_ms, base_micros, records_micros,
       cpu_micros, capped, charge_micros, developer_micros, platform_micros, period, charged_at
FROM billing_usage WHERE run_id = %s;

-- name: account_balance
-- The sum of an account's entries (positive: the account is owed / holds a debit).
SELECT coalesce(sum(amount), 0)::bigint AS balance FROM ledger_entries WHERE account = %s;

-- name: transaction_sums
-- Every transaction with the sum of its entries (all zero, unless the ledger is broken).
SELECT t.id, t.kind, coalesce(sum(e.amount), 0)::bigint AS total, count(e.id) AS entries
FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
WHERE t.org_id = ANY(%s::text[])
GROUP BY t.id, t.kind;

-- name: run_transaction
-- The ledger transaction of kind %s for a run, with its entries.
SELECT t.id, e.account, e.amount
FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id
WHERE t.kind = %s AND t.run_id = %s
ORDER BY e.id;

-- name: settings_for_update
-- An org's spend limits, its row locked until the transaction ends: reservations of one org are
-- decided one after another, so concurrent runs never together pass its budget.
SELECT monthly_budget_micros, default_run_cap_micros, frozen FROM billing_settings WHERE org_id = %s FOR UPDATE;

-- name: settings
SELECT org_id, monthly_budget_micros, default_run_cap_micros, frozen, frozen_reason, updated_at
FROM billing_settings WHERE org_id = %s;

-- name: put_settings
-- Set an org's budget and default cap (the freeze is left as it is).
INSERT INTO billing_settings AS s (org_id, monthly_budget_micros, default_run_cap_micros)
VALUES (%s, %s, %s)
ON CONFLICT (org_id) DO UPDATE
SET monthly_budget_micros = EXCLUDED.monthly_budget_micros,
    default_run_cap_micros = EXCLUDED.default_run_cap_micros, updated_at = now()
RETURNING org_id, monthly_budget_micros, default_run_cap_micros, frozen, frozen_reason, updated_at;

-- name: put_frozen
INSERT INTO billing_settings AS s (org_id, frozen, frozen_reason) VALUES (%s, %s, %s)
ON CONFLICT (org_id) DO UPDATE SET frozen = EXCLUDED.frozen, frozen_reason = EXCLUDED.frozen_reason,
                                   updated_at = now()
RETURNING org_id, monthly_budget_micros, default_run_cap_micros, frozen, frozen_reason, updated_at;

-- name: period_for_update
-- The org's spend this month, its row created when missing (under the settings row's lock).
INSERT INTO billing_periods AS p (org_id, period) VALUES (%s, %s)
ON CONFLICT (org_id, period) DO UPDATE SET org_id = p.org_id
RETURNING charged_micros, reserved_micros, alerted_percent;

-- name: reserve
-- Hold a run's cap against its month's budget.
WITH held AS (
    INSERT INTO billing_reservations (run_id, org_id, period, cap_micros) VALUES (%s, %s, %s, %s)
    RETURNING org_id, period, cap_micros
)
UPDATE billing_periods p SET reserved_micros = p.reserved_micros + h.cap_micros
FROM held h WHERE p.org_id = h.org_id AND p.period = h.period;

-- name: hold_cap
-- A run's cap without a budget: nothing to hold against, only the cap to enforce.
INSERT INTO billing_reservations (run_id, org_id, period, cap_micros) VALUES (%s, %s, %s, %s);

-- name: release
-- A run has ended: its reservation is no longer held against the budget.
WITH gone AS (
    DELETE FROM billing_reservations WHERE run_id = %s RETURNING org_id, period, cap_micros
)
UPDATE billing_periods p SET reserved_micros = greatest(0, p.reserved_micros - g.cap_micros)
FROM gone g WHERE p.org_id = g.org_id AND p.period = g.period;

-- name: reservation
SELECT run_id, org_id, period, cap_micros, used_micros FROM billing_reservations WHERE run_id = %s;

-- name: report_usage
-- What a running run has used so far; answers its cap.
UPDATE billing_reservations SET used_micros = greatest(used_micros, %s) WHERE run_id = %s
RETURNING cap_micros, used_micros;

-- name: set_alerted
-- Record that the org was told its month's spend passed a threshold (once per threshold).
UPDATE billing_periods SET alerted_percent = %s WHERE org_id = %s AND period = %s AND alerted_percent < %s
RETURNING alerted_percent;

-- name: usage_runs
-- An org's metered runs in [from, to), newest first.
SELECT run_id, agent_id, version, outcome, records, cpu_ms, charge_micros, capped, charged_at
FROM billing_usage WHERE org_id = %s AND charged_at >= %s AND charged_at < %s
ORDER BY charged_at DESC, run_id DESC LIMIT %s;

-- name: usage_by_agent
SELECT agent_id, count(*) AS runs, coalesce(sum(records), 0)::bigint AS records,
       coalesce(sum(cpu_ms), 0)::bigint AS cpu_ms, coalesce(sum(charge_micros), 0)::bigint AS charge_micros
FROM billing_usage WHERE org_id = %s AND charged_at >= %s AND charged_at < %s
GROUP BY agent_id ORDER BY agent_id;

-- name: usage_by_day
SELECT (charged_at AT TIME ZONE 'UTC')::date AS day, count(*) AS runs,
       coalesce(sum(charge_micros), 0)::bigint AS charge_micros
FROM billing_usage WHERE org_id = %s AND charged_at >= %s AND charged_at < %s
GROUP BY 1 ORDER BY 1;

-- name: period_spend
SELECT charged_micros, reserved_micros FROM billing_periods WHERE org_id = %s AND period = %s;

-- name: lock_usage_for_watermark
-- Wait for every transaction that is inserting usage rows (SHARE conflicts with their ROW
-- EXCLUSIVE), so that every seq below the watermark read next belongs to a committed row.
LOCK TABLE billing_usage IN SHARE MODE;

-- name: usage_watermark
SELECT coalesce(max(seq), 0)::bigint AS through_seq FROM billing_usage;

-- name: lock_refunds_for_watermark
-- The same for refunds (taken after the usage lock; a refund locks a usage row, never the table).
LOCK TABLE billing_refunds IN SHARE MODE;

-- name: refunds_watermark
SELECT coalesce(max(seq), 0)::bigint AS refunds_through FROM billing_refunds;

-- name: last_cycle
SELECT period, through_seq, after_seq, refunds_through, refunds_after, invoiced_at
FROM billing_cycles ORDER BY period DESC LIMIT 1;

-- name: cycle_before
SELECT period, through_seq, after_seq, refunds_through, refunds_after
FROM billing_cycles WHERE period < %s ORDER BY period DESC LIMIT 1;

-- name: mark_cycle_invoiced
UPDATE billing_cycles SET invoiced_at = now() WHERE period = %s;

-- name: insert_cycle
INSERT INTO billing_cycles (period, through_seq, after_seq, refunds_through, refunds_after)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (period) DO NOTHING RETURNING period;

-- name: cycle_lines
-- One aggregate pass over the cycle's usage rows, per org, agent and month charged: the rows
-- between the previous watermark and this one, plus those the previous cycle left for being of a
-- later month than it closed; never a month later than the one closed (they wait for its cycle).
SELECT org_id, agent_id, period, count(*) AS runs, sum(charge_micros)::bigint AS amount_micros
FROM billing_usage
WHERE period <= %s AND charge_micros > 0
  AND ((seq > %s AND seq <= %s) OR (seq > %s AND seq <= %s AND period > %s))
GROUP BY org_id, agent_id, period
ORDER BY org_id, period, agent_id;

-- name: cycle_refunds
-- The cycle's refunds, per org, agent and month made, as for usage (cycle_lines): those between the
-- previous refunds watermark and this one, plus those the previous cycle left for a later month.
SELECT f.org_id, u.agent_id, f.period, count(*) AS refunds, sum(f.amount_micros)::bigint AS amount_micros
FROM billing_refunds f JOIN billing_usage u ON u.run_id = f.run_id
WHERE f.period <= %s
  AND ((f.seq > %s AND f.seq <= %s) OR (f.seq > %s AND f.seq <= %s AND f.period > %s))
GROUP BY f.org_id, u.agent_id, f.period
ORDER BY f.org_id, f.period, u.agent_id;

-- name: insert_invoices
-- A cycle's invoices, one per org (arrays); those of orgs invoiced for the month already are skipped.
INSERT INTO invoices (id, org_id, period, status, total_micros, total_cents, note)
SELECT id, org_id, %s, 'draft', total_micros, total_cents, %s
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS i (id, org_id, total_micros, total_cents)
ON CONFLICT (org_id, period) DO NOTHING
RETURNING id;

-- name: insert_invoice_lines
INSERT INTO invoice_lines (invoice_id, line_no, kind, agent_id, usage_period, run_count, description, amount_micros,
                           amount_cents)
SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::date[], %s::bigint[], %s::text[],
                     %s::bigint[], %s::bigint[]);

-- name: drafts_to_send
-- Invoices not yet sent to Stripe (a cycle without Stripe settings, or a push that failed).
SELECT id, org_id, period, total_micros, total_cents FROM invoices
WHERE status = 'draft' AND stripe_invoice_id IS NULL ORDER BY created_at LIMIT %s;

-- name: invoice_lines
SELECT line_no, kind, agent_id, usage_period, run_count, description, amount_micros, amount_cents
FROM invoice_lines WHERE invoice_id = %s ORDER BY line_no;

-- name: customer
SELECT stripe_customer_id FROM billing_customers WHERE org_id = %s;

-- name: insert_customer
INSERT INTO billing_customers (org_id, stripe_customer_id) VALUES (%s, %s)
ON CONFLICT (org_id) DO NOTHING;

-- name: mark_sent
UPDATE invoices SET status = 'open', stripe_invoice_id = %s, finalized_at = now(), note = NULL
WHERE id = %s AND status = 'draft'
RETURNING id;

-- name: invoice
SELECT id, org_id, period, status, total_micros, total_cents, stripe_invoice_id, note, created_at, finalized_at,
       paid_at, payment_failed_at
FROM invoices WHERE id = %s AND org_id = %s;

-- name: invoices_of_org
SELECT id, org_id, period, status, total_micros, total_cents, stripe_invoice_id, note, created_at, finalized_at,
       paid_at, payment_failed_at
FROM invoices WHERE org_id = %s ORDER BY period DESC LIMIT %s;

-- name: invoice_by_stripe_id
SELECT id, org_id, period, status, total_micros, total_cents FROM invoices WHERE stripe_invoice_id = %s FOR UPDATE;

-- name: record_stripe_event
INSERT INTO stripe_events (id, type) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING RETURNING id;

-- name: mark_paid
UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = %s AND status IN ('open', 'payment_failed');

-- name: mark_payment_failed
UPDATE invoices SET status = 'payment_failed', payment_failed_at = coalesce(payment_failed_at, now())
WHERE id = %s AND status IN ('open', 'payment_failed');

-- name: unpaid_past_grace
-- Orgs with an invoice whose payment failed longer ago than the grace period, not frozen yet.
SELECT DISTINCT i.org_id FROM invoices i
LEFT JOIN billing_settings s ON s.org_id = i.org_id
WHERE i.status = 'payment_failed' AND i.payment_failed_at < now() - make_interval(days => %s)
  AND NOT coalesce(s.frozen, false);

-- name: earnings
-- A developer org's earnings per agent and month (what its agents' runs and subscriptions were
-- charged, and what was refunded of those runs' charges since). Parameters: the developer org
-- three times, then the limit.
SELECT agent_id, period, sum(run_count)::bigint AS run_count, sum(charge_micros)::bigint AS gross_micros,
       sum(developer_micros)::bigint AS developer_micros, sum(platform_micros)::bigint AS platform_micros,
       sum(refunded_micros)::bigint AS refunded_micros,
       sum(developer_refunded_micros)::bigint AS developer_refunded_micros
FROM (SELECT agent_id, period, 1 AS run_count, charge_micros, developer_micros, platform_micros,
             0 AS refunded_micros, 0 AS developer_refunded_micros
      FROM billing_usage WHERE developer_org_id = %s AND charge_micros > 0
      UNION ALL
      SELECT agent_id, period, 0, charge_micros, developer_micros, platform_micros, 0, 0
      FROM billing_subscriptions WHERE developer_org_id = %s
      UNION ALL
      SELECT u.agent_id, u.period, 0, 0, 0, 0, f.amount_micros, f.developer_micros
      FROM billing_refunds f JOIN billing_usage u ON u.run_id = f.run_id WHERE f.developer_org_id = %s) AS earned
GROUP BY agent_id, period ORDER BY period DESC, agent_id LIMIT %s;

-- name: payout_account
SELECT stripe_account_id FROM payout_accounts WHERE org_id = %s;

-- name: insert_payout_account
INSERT INTO payout_accounts (org_id, stripe_account_id) VALUES (%s, %s) ON CONFLICT (org_id) DO NOTHING;

-- name: developer_balances
-- Developer accounts owed at least the minimum (a developer account's balance is a credit: negative sums).
SELECT substr(account, 11) AS org_id, (-sum(amount))::bigint AS owed_micros
FROM ledger_entries WHERE account LIKE 'developer:%%'
GROUP BY account HAVING -sum(amount) >= %s;

-- name: claim_payout
-- A payout of the month for the org, once (a failed one is tried again with the same key).
INSERT INTO payouts AS p (id, org_id, period, amount_micros, amount_cents, status) VALUES (%s, %s, %s, %s, %s, 'pending')
ON CONFLICT (org_id, period) DO UPDATE SET status = 'pending', error = NULL, amount_micros = EXCLUDED.amount_micros,
                                           amount_cents = EXCLUDED.amount_cents
WHERE p.status = 'failed'
RETURNING id, amount_micros, amount_cents;

-- name: payout_paid
UPDATE payouts SET status = 'paid', stripe_transfer_id = %s, paid_at = now() WHERE id = %s;

-- name: payout_failed
UPDATE payouts SET status = 'failed', error = %s WHERE id = %s;

-- name: payouts_of_org
SELECT id, org_id, period, amount_micros, amount_cents, status, stripe_transfer_id, error, created_at, paid_at
FROM payouts WHERE org_id = %s ORDER BY period DESC LIMIT %s;

-- name: usage_for_refund
-- The run's charge, its row locked until the refund commits: refunds of one run are decided one
-- after another, so together they never pass the charge (the row itself never changes).
SELECT run_id, org_id, developer_org_id, charge_micros, developer_micros, period
FROM billing_usage WHERE run_id = %s FOR UPDATE;

-- name: refunded_of_run
SELECT coalesce(sum(amount_micros), 0)::bigint AS amount_micros,
       coalesce(sum(developer_micros), 0)::bigint AS developer_micros
FROM billing_refunds WHERE run_id = %s;

-- name: insert_refund
-- A refund, and the month of the run's charge gives the amount back to the org's budget.
WITH refund AS (
    INSERT INTO billing_refunds (id, run_id, org_id, developer_org_id, amount_micros, developer_micros,
                                 platform_micros, transaction_id, reason, created_by, period)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    RETURNING id, run_id, org_id, amount_micros, developer_micros, platform_micros, transaction_id, reason,
              created_by, created_at
), budget AS (
    UPDATE billing_periods p SET charged_micros = greatest(0, p.charged_micros - r.amount_micros)
    FROM refund r WHERE p.org_id = r.org_id AND p.period = %s
)
SELECT * FROM refund;

-- name: refunds_in
-- What was refunded of an org's runs charged in [from, to): per run (the usage API).
SELECT f.run_id, sum(f.amount_micros)::bigint AS refunded_micros
FROM billing_refunds f JOIN billing_usage u ON u.run_id = f.run_id
WHERE u.org_id = %s AND u.charged_at >= %s AND u.charged_at < %s
GROUP BY f.run_id;

-- name: charge_subscriptions
-- A closed month's subscription fees, once per deployment and month: the fee row's key is
-- (deployment, month), so a cycle that runs again (or at the same time) inserts nothing and posts
-- nothing. Each fee inserted is posted as a balanced transaction split like a run's charge
-- (customer debit = developer share + platform fee). Arrays, one element per deployment; then
-- the month and its number of days.
WITH fee AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::bigint[],
                         %s::bigint[], %s::bigint[], %s::bigint[], %s::text[])
        AS f (deployment_id, org_id, agent_id, version, developer_org_id, active_days, monthly_micros, charge_micros,
              developer_micros, platform_micros, transaction_id)
), charged AS (
    INSERT INTO billing_subscriptions (deployment_id, period, org_id, agent_id, version, developer_org_id,
                                       active_days, period_days, monthly_micros, charge_micros, developer_micros,
                                       platform_micros, transaction_id)
    SELECT deployment_id, %s::date, org_id, agent_id, version, developer_org_id, active_days, %s::int,
           monthly_micros, charge_micros, developer_micros, platform_micros, transaction_id
    FROM fee
    ON CONFLICT (deployment_id, period) DO NOTHING
    RETURNING deployment_id, period, org_id, developer_org_id, charge_micros, developer_micros, platform_micros,
              transaction_id
), posted AS (
    INSERT INTO ledger_transactions (id, kind, org_id, run_id, memo)
    SELECT transaction_id, 'subscription', org_id, NULL,
           jsonb_build_object('deployment_id', deployment_id, 'period', period, 'developer_org_id', developer_org_id)
    FROM charged
    RETURNING id
)
INSERT INTO ledger_entries (transaction_id, account, amount)
SELECT c.transaction_id, e.account, e.amount
FROM charged c JOIN posted p ON p.id = c.transaction_id
CROSS JOIN LATERAL (VALUES ('customer:' || c.org_id, c.charge_micros),
                           ('developer:' || c.developer_org_id, -c.developer_micros),
                           ('platform:revenue', -c.platform_micros)) AS e (account, amount)
WHERE e.amount <> 0;

-- name: subscriptions_of_period
-- A month's subscription fees per org and agent (its invoice lines).
SELECT org_id, agent_id, count(*) AS deployments, sum(charge_micros)::bigint AS amount_micros
FROM billing_subscriptions WHERE period = %s
GROUP BY org_id, agent_id ORDER BY org_id, agent_id;

-- name: subscriptions_of_org
SELECT deployment_id, period, agent_id, version, active_days, period_days, monthly_micros, charge_micros,
       developer_micros, platform_micros, transaction_id
FROM billing_subscriptions WHERE org_id = %s ORDER BY period, deployment_id;
