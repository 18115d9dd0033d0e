"""The monthly billing cycle over many usage rows, side by side with one SQL aggregate pass.

    .venv/bin/python bench/billing.py [--rows 1000000] [--orgs 1000] [--agents 20] [--rounds 3]

On a fresh embedded PostgreSQL (a temporary data directory), ``rows`` usage rows of one month are
written for ``orgs`` orgs and ``agents`` agents (``generate_series``, straight into
``billing_usage``: the rows the charges of that many runs would have left). Then, per round:

* **aggregate**: one SQL pass over the same rows, grouped by org, agent and month (what any
  invoicing must at least read): ``SELECT org_id, agent_id, period, count(*), sum(...) ... GROUP BY``;
* **cycle**: ``Invoicing.close_period`` for that month: the watermark under its SHARE lock, the
  aggregate, and an invoice per org with a line per agent, audited (Stripe not configured: drafts).

Each round closes a month of its own (the rows are moved to it first, outside the timing), so
every cycle does the full work. Prints the medians and the ratio cycle / aggregate (target ≤ 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

# ruff: noqa: E402 - the imports below must come after the sys.path fix
import argparse
import os
import statistics
import tempfile
import time
from datetime import date

TARGET_RATIO = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from shared.composition import build_container
    from shared.kernel.settings import Settings

    with tempfile.TemporaryDirectory(prefix="bench-billing-") as tmp:
        os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user when started as root
        container = build_container(Settings(mode="local", data_dir=Path(tmp)))
        try:
            db = container.db
            started = time.perf_counter()
            with db.transaction() as tx:
                tx.execute("INSERT INTO users (id, email) VALUES ('usr_bench', 'bench@example.com')")
                tx.execute("INSERT INTO orgs (id, name, created_by) SELECT 'org_b' || g, 'Bench ' || g, 'usr_bench' "
                           "FROM generate_series(1, %s) g", args.orgs)
                tx.execute(
                    "INSERT INTO billing_usage (run_id, org_id, agent_id, version, developer_org_id, outcome, records,"
                    " cpu_ms, base_micros, records_micros, cpu_micros, charge_micros, developer_micros,"
                    " platform_micros, period)"
                    " SELECT 'run_b' || g, 'org_b' || (g %% %s + 1), 'agt_b' || (g %% %s), '1.0.0', 'org_b1',"
                    " 'succeeded', 100, 1000, 500000, 100000, 139, 600139, 480111, 120028, DATE '2030-01-01'"
                    " FROM generate_series(1, %s) g", args.orgs, args.agents, args.rows)
            with db.read() as tx:
                tx.execute("ANALYZE billing_usage")
            print(f"seeded {args.rows:,} usage rows for {args.orgs} orgs in {time.perf_counter() - started:.1f} s")

            aggregate, cycle = [], []
            for n in range(args.rounds):
                period = date(2030 + n, 2, 1)
                with db.transaction() as tx:  # the rows of this round's month (billing_usage refuses UPDATE)
                    tx.execute("ALTER TABLE billing_usage DISABLE TRIGGER billing_usage_no_update")
                    tx.execute("UPDATE billing_usage SET period = %s", period)
                    tx.execute("ALTER TABLE billing_usage ENABLE TRIGGER billing_usage_no_update")
                    tx.execute("DELETE FROM billing_cycles")
                with db.read() as tx:
                    tx.execute("VACUUM ANALYZE billing_usage")
                t0 = time.perf_counter()
                with db.read() as tx:
                    groups = tx.fetch_all(
                        "SELECT org_id, agent_id, period, count(*) AS runs, sum(charge_micros)::bigint AS amount"
                        " FROM billing_usage WHERE charge_micros > 0 GROUP BY org_id, agent_id, period")
                aggregate.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                invoices = container.invoicing.close_period(period)
                cycle.append(time.perf_counter() - t0)
                assert len(invoices) == args.orgs, (len(invoices), args.orgs)
                print(f"round {n + 1}: aggregate {aggregate[-1]:.3f} s ({len(groups):,} groups), "
                      f"cycle {cycle[-1]:.3f} s ({len(invoices)} invoices)")
            agg, cyc = statistics.median(aggregate), statistics.median(cycle)
            ratio = cyc / agg
            print(f"median: aggregate {agg:.3f} s, cycle {cyc:.3f} s, cycle / aggregate = {ratio:.2f} "
                  f"(target ≤ {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
        finally:
            container.close()


if __name__ == "__main__":
    main()
