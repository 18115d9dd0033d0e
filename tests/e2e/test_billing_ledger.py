"""The ledger and the charge of runs against the real database: balanced, append-only, once per run."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runs_support import claim, install_builtin, metrics, start_run

from shared.billing import LedgerImbalance, Outcome, customer_account, split
from shared.kernel.errors import NotFound
from shared.kernel.ids import new_id
from shared.kernel.money import PricingSpec

PRICING = PricingSpec(base_usd=Decimal("0.50"), per_record_usd=Decimal("0.001"), per_cpu_hour_usd=Decimal("0.50"))


@pytest.fixture
def inst(container, make_org, anon, settings):
    return install_builtin(container, make_org, anon, settings)


def _complete(anon, inst, task, status="succeeded", **extra):
    body = {"task_id": task["task_id"], "lease_token": task["lease_token"], "status": status,
            "metrics": extra.pop("metrics", metrics(10, 0.5)), **extra}
    return anon.post(f"/agents/{inst.agent_id}/runs/{task['run_id']}/complete", token=inst.key, json=body)


def _publisher(container, agent_id):
    with container.db.read() as tx:
        return container.catalog.publisher_org_of(tx, agent_id)


def test_a_run_is_charged_the_documents_example_once(inst, anon, container):
    billing = container.billing
    developer = _publisher(container, inst.agent_id)
    before = (billing.customer_balance(inst.org_id), billing.developer_balance(developer), billing.platform_balance())
    run = start_run(inst.admin, inst)
    task = claim(anon, inst.key)
    done = _complete(anon, inst, task, metrics=metrics(15_000, 7200))
    assert done.status == 200
    # The completion retried (same lease, a lost answer) and again after a crash: nothing more.
    assert _complete(anon, inst, task, metrics=metrics(15_000, 7200)).body == done.body
    usage = billing.run_usage(run["id"])
    assert usage.charge_micros == 16_500_000 and usage.outcome == "succeeded"
    assert (usage.developer_micros, usage.platform_micros) == (13_200_000, 3_300_000)
    after = (billing.customer_balance(inst.org_id), billing.developer_balance(developer), billing.platform_balance())
    assert after[0] - before[0] == 16_500_000
    assert after[1] - before[1] == 13_200_000
    assert after[2] - before[2] >= 3_300_000  # other tests' runs may add fees to the platform meanwhile
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert actions.count("billing.run_charged") == 1


def test_charging_a_run_twice_posts_nothing_more(inst, container):
    billing = container.billing
    run_id = new_id("run")
    for _ in range(3):
        with container.db.transaction() as tx:
            billing.charge_run(tx, run_id=run_id, org_id=inst.org_id, agent_id=inst.agent_id, version="1.0.1",
                               pricing=PRICING, outcome=Outcome.SUCCEEDED, records=15_000, cpu_seconds=7200,
                               actor="test")
    sums = [t for t in billing.transaction_sums([inst.org_id]) if t.kind == "run_charge"]
    with container.db.read() as tx:
        rows = tx.fetch_all("SELECT id FROM ledger_transactions WHERE run_id = %s", run_id)
    assert len(rows) == 1 and all(t.total == 0 for t in sums)


def test_the_database_refuses_an_unbalanced_transaction_and_any_edit(inst, container):
    def unbalanced() -> None:
        with container.db.transaction() as tx:
            tx.execute("INSERT INTO ledger_transactions (id, kind, org_id) VALUES (%s, 'manual', %s)",
                       "ltx_unbalanced", inst.org_id)
            tx.execute("INSERT INTO ledger_entries (transaction_id, account, amount) "
                       "VALUES (%s, %s, 5), (%s, %s, -4)",
                       "ltx_unbalanced", customer_account(inst.org_id), "ltx_unbalanced", "platform:revenue")

    with pytest.raises(Exception, match="does not balance"):
        unbalanced()
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM ledger_transactions WHERE id = 'ltx_unbalanced'") == 0
    with container.db.transaction() as tx:
        posted = container.billing.post(tx, kind="manual", org_id=inst.org_id,
                                        entries=[(customer_account(inst.org_id), 7), ("platform:revenue", -7)])
    for statement in ("UPDATE ledger_entries SET amount = 8 WHERE transaction_id = %s",
                      "DELETE FROM ledger_entries WHERE transaction_id = %s",
                      "UPDATE ledger_transactions SET kind = 'x' WHERE id = %s"):
        with pytest.raises(Exception, match="append-only"), container.db.transaction() as tx:
            tx.execute(statement, posted)
    with pytest.raises(LedgerImbalance), container.db.transaction() as tx:
        container.billing.post(tx, kind="manual", org_id=inst.org_id,
                               entries=[(customer_account(inst.org_id), 7), ("platform:revenue", -6)])


def test_a_refund_is_a_new_transaction_once(inst, container):
    billing = container.billing
    run_id = new_id("run")
    with container.db.transaction() as tx:
        billing.charge_run(tx, run_id=run_id, org_id=inst.org_id, agent_id=inst.agent_id, version="1.0.1",
                           pricing=PRICING, outcome=Outcome.SUCCEEDED, records=1, cpu_seconds=0, actor="test")
    before = billing.customer_balance(inst.org_id)
    assert billing.refund_run(run_id, actor="test") is not None
    assert billing.refund_run(run_id, actor="test") is None
    assert billing.customer_balance(inst.org_id) == before - 501_000
    with pytest.raises(NotFound):
        billing.refund_run(new_id("run"), actor="test")


_STEP = st.one_of(
    st.tuples(st.just("complete"), st.integers(0, 5), st.integers(0, 50_000), st.integers(0, 10_000_000),
              st.sampled_from(list(Outcome))),
    st.tuples(st.just("refund"), st.integers(0, 5)),
    st.tuples(st.just("payout"), st.integers(1, 30_000_000)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_STEP, min_size=1, max_size=12))
def test_ledger_properties_over_random_streams(inst, container, steps):
    """Runs completed (and completed again), refunds and payouts in any order: every transaction
    sums to zero, balances are the sums of their entries as a model predicts, the split is exact,
    a duplicate completion charges nothing, a refund after a payout leaves the developer negative."""
    billing = container.billing
    developer = _publisher(container, inst.agent_id)
    customer0, developer0 = billing.customer_balance(inst.org_id), billing.developer_balance(developer)
    runs = [new_id("run") for _ in range(6)]
    charged: dict[int, tuple[int, int, int]] = {}
    refunded: set[int] = set()
    owed_customer = owed_developer = 0
    for step in steps:
        if step[0] == "complete":
            _, index, records, cpu_ms, outcome = step
            with container.db.transaction() as tx:
                charge = billing.charge_run(tx, run_id=runs[index], org_id=inst.org_id, agent_id=inst.agent_id,
                                            version="1.0.1", pricing=PRICING, outcome=outcome, records=records,
                                            cpu_seconds=cpu_ms / 1000, actor="test")
            assert (charge.developer_micros, charge.platform_micros) == split(charge.total_micros)
            if index not in charged:
                charged[index] = (charge.total_micros, charge.developer_micros, charge.platform_micros)
                owed_customer += charge.total_micros
                owed_developer += charge.developer_micros
        elif step[0] == "refund":
            index = step[1]
            if index not in charged:
                with pytest.raises(NotFound):
                    billing.refund_run(runs[index], actor="test")
                continue
            refund = billing.refund_run(runs[index], actor="test")
            if index in refunded or charged[index][0] == 0:
                assert refund is None
            else:
                refunded.add(index)
                owed_customer -= charged[index][0]
                owed_developer -= charged[index][1]
        else:
            amount = step[1]
            with container.db.transaction() as tx:
                billing.record_payout(tx, developer, amount, transfer_id=new_id("tr"))
            owed_developer -= amount
        assert billing.customer_balance(inst.org_id) - customer0 == owed_customer
        assert billing.developer_balance(developer) - developer0 == owed_developer
    assert all(t.total == 0 and t.entries >= 2 for t in billing.transaction_sums([inst.org_id, developer]))
    for index, (total, _, _) in charged.items():
        usage = billing.run_usage(runs[index])
        assert usage.charge_micros == total  # the first completion's charge, never a later one's
