-- The billing context's named statements (docs/BILLING.md). Money is integer micro-dollars.

-- name: charge_run
-- Meter a run's outcome and post its charge, once: the usage row is keyed by the run, so a retried
-- completion inserts nothing and nothing follows. The charge moves the org's reservation into its
-- month's spend and posts one balanced ledger transaction (customer debit = developer share +
-- platform fee). One statement, sent with the completion's COMMIT.
WITH metered AS (
    INSERT INTO billing_usage (run_id, org_id, agent_id, version, developer_org_id, outcome, records, cpu_ms,
                               base_micros, records_micros, cpu_micros, capped, charge_micros, developer_micros,
                               platform_micros, period)
    VALUES (%s, %s, %s, %s, %s, %s, %s,
            %s, %s, %s, %s, %s, %s,
            %s, %s, %s)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, org_id, developer_org_id, charge_micros, developer_micros, platform_micros, period
), released AS (
    DELETE FROM billing_reservations r USING metered m WHERE r.run_id = m.run_id
    RETURNING r.cap_micros, r.period
), spent AS (
    INSERT INTO billing_periods AS p (org_id, period, charged_micros)
    SELECT m.org_id, m.period, m.charge_micros FROM metered m
    ON CONFLICT (org_id, period) DO UPDATE
    SET charged_micros = p.charged_micros + EXCLUDED.charged_micros,
        reserved_micros = greatest(0, p.reserved_micros
                                      - coalesce((SELECT sum(cap_micros) FROM released WHERE period = p.period), 0))
    RETURNING p.org_id
), posted AS (
    INSERT INTO ledger_transactions (id, kind, org_id, run_id, memo)
    SELECT %s, 'run_charge', m.org_id, m.run_id,
           jsonb_build_object('developer_org_id', m.developer_org_id)
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
