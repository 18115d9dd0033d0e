"""Refunds of a run's charge: the platform-admin API (full or partial, idempotent, audited, shown in
usage) and properties over random refunds (never more than the charge, every transaction balanced,
the developer's share given back in proportion and exactly in full)."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runs_support import install_builtin

from shared.billing import Outcome, split
from shared.billing.models import refund_split
from shared.kernel.errors import AppError
from shared.kernel.ids import new_id
from shared.kernel.money import PricingSpec

PRICING = PricingSpec(base_usd=Decimal("0.50"), per_record_usd=Decimal("0.001"), per_cpu_hour_usd=Decimal("0.50"))


@pytest.fixture
def inst(container, make_org, anon, settings):
    return install_builtin(container, make_org, anon, settings)


def _publisher(container, agent_id):
    with container.db.read() as tx:
        return container.catalog.publisher_org_of(tx, agent_id)


def _charge(container, inst, records: int, cpu_seconds: float = 7200) -> tuple[str, int]:
    run_id = new_id("run")
    with container.db.transaction() as tx:
        charge = container.billing.charge_run(tx, run_id=run_id, org_id=inst.org_id, agent_id=inst.agent_id,
                                              version="1.0.1", pricing=PRICING, outcome=Outcome.SUCCEEDED,
                                              records=records, cpu_seconds=cpu_seconds, actor="test")
    return run_id, charge.total_micros


def test_platform_admins_refund_in_part_then_in_full_once(container, inst, make_user):
    billing = container.billing
    developer = _publisher(container, inst.agent_id)
    run_id, charge = _charge(container, inst, 15_000)  # 16.50 USD: developer 13.20, platform 3.30
    assert charge == 16_500_000
    owed, earned = billing.customer_balance(inst.org_id), billing.developer_balance(developer)
    admin = make_user("platform", platform_admin=True)
    url = f"/admin/runs/{run_id}/refund"
    # The org's own admin may not refund (a refund moves the developer's money).
    assert inst.admin.post(url, json={"reason": "x"}).status == 403
    key = {"Idempotency-Key": new_id("idem")}
    first = admin.post(url, json={"amount_usd": "5.00", "reason": "agent misbehaved"}, headers=key)
    assert first.status == 200, first
    assert first.body["amount_micros"] == 5_000_000 and first.body["refunded_micros"] == 5_000_000
    assert (first.body["developer_micros"], first.body["platform_micros"]) == (4_000_000, 1_000_000)
    # A retry with the same key is answered from the first response: nothing is refunded twice.
    again = admin.post(url, json={"amount_usd": "5.00", "reason": "agent misbehaved"}, headers=key)
    assert again.status == 200 and again.body["id"] == first.body["id"]
    assert billing.customer_balance(inst.org_id) == owed - 5_000_000
    # More than what is left: refused, nothing changes.
    over = admin.post(url, json={"amount_usd": "11.51", "reason": "too much"})
    assert over.status == 409 and over.body["error"]["code"] == "refund_exceeds_charge"
    assert admin.post(url, json={"amount_usd": "0", "reason": "nothing"}).status == 422
    assert admin.post(url, json={"amount_usd": "0.0000001", "reason": "finer"}).status == 422
    # The rest (no amount): the developer's share and the platform's fee come back exactly.
    rest = admin.post(url, json={"reason": "refund the rest"})
    assert rest.status == 200 and rest.body["amount_micros"] == 11_500_000
    assert rest.body["refunded_micros"] == charge
    assert first.body["developer_micros"] + rest.body["developer_micros"] == 13_200_000
    assert billing.customer_balance(inst.org_id) == owed - charge
    assert billing.developer_balance(developer) == earned - 13_200_000
    done = admin.post(url, json={"reason": "again"})
    assert done.status == 409 and done.body["error"]["code"] == "refund_exceeds_charge"
    assert admin.post(f"/admin/runs/{new_id('run')}/refund", json={"reason": "unknown"}).status == 404
    # The usage view and the audit chain show it; every transaction balances.
    usage = inst.admin.get(f"/orgs/{inst.org_id}/usage").body
    item = next(i for i in usage["items"] if i["run_id"] == run_id)
    assert item["refunded_micros"] == charge and item["refunded_usd"] == "16.50"
    assert usage["refunded_micros"] == charge
    entries = inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]
    refunds = [e for e in entries if e["action"] == "billing.run_refunded"]
    assert len(refunds) == 2 and {e["details"]["reason"] for e in refunds} == {"agent misbehaved", "refund the rest"}
    assert all(t.total == 0 for t in billing.transaction_sums([inst.org_id, developer]))


def test_a_refund_gives_the_month_back_to_the_budget(container, inst, make_user):
    inst.admin.put(f"/orgs/{inst.org_id}/billing/limits", json={"monthly_budget_usd": "100"})
    run_id, _ = _charge(container, inst, 15_000)
    assert container.billing.limits(inst.org_id).charged_this_month_usd == "16.50"
    admin = make_user("platform", platform_admin=True)
    assert admin.post(f"/admin/runs/{run_id}/refund", json={"amount_usd": "6.50", "reason": "x"}).status == 200
    assert container.billing.limits(inst.org_id).charged_this_month_usd == "10.00"


def test_concurrent_refunds_never_pass_the_charge(container, inst):
    run_id, charge = _charge(container, inst, 15_000)
    barrier = threading.Barrier(6)
    done: list[int] = []
    refused: list[int] = []

    def refund() -> None:
        barrier.wait()
        try:
            out = container.billing.refund(run_id, amount_micros=5_000_000, actor="test", reason="race")
            assert out is not None
            done.append(out.amount_micros)
        except AppError as exc:
            refused.append(exc.status)

    threads = [threading.Thread(target=refund) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 16.50 USD: three refunds of 5 USD fit, the other three are refused.
    assert sorted(done) == [5_000_000] * 3 and refused == [409] * 3
    assert container.billing.run_usage(run_id).charge_micros == charge


@pytest.mark.parametrize(("charge", "developer"), [(1, 0), (3, 2), (16_500_000, 13_200_000), (999_999, 799_999)])
def test_refund_split_gives_back_exactly_the_shares_in_full(charge, developer):
    back = refund_split(charge, developer, 0, charge, 0)
    assert back == (developer, charge - developer)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.integers(0, 20_000), min_size=1, max_size=3),
       refunds=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 20_000_000) | st.none()), max_size=8))
def test_refunds_never_pass_the_charge_and_every_transaction_balances(container, inst, records, refunds):
    billing = container.billing
    developer = _publisher(container, inst.agent_id)
    customer0, developer0 = billing.customer_balance(inst.org_id), billing.developer_balance(developer)
    runs = [_charge(container, inst, r, cpu_seconds=0) for r in records]
    refunded = [0] * len(runs)
    dev_back = [0] * len(runs)
    for index, amount in refunds:
        if index >= len(runs):
            continue
        run_id, charge = runs[index]
        left = charge - refunded[index]
        if amount is not None and amount > left:
            with pytest.raises(AppError) as refused:
                billing.refund(run_id, amount_micros=amount, actor="test", reason="property")
            assert refused.value.status == 409
            continue
        out = billing.refund(run_id, amount_micros=amount, actor="test", reason="property")
        if out is None:
            assert amount is None and left == 0
            continue
        assert amount is None or amount <= left
        assert out.amount_micros == (left if amount is None else amount)
        refunded[index] += out.amount_micros
        dev_back[index] += out.developer_micros
        assert out.refunded_micros == refunded[index] <= charge
    charged = sum(c for _, c in runs)
    assert billing.customer_balance(inst.org_id) - customer0 == charged - sum(refunded)
    shares = [split(c)[0] for _, c in runs]
    assert billing.developer_balance(developer) - developer0 == sum(shares) - sum(dev_back)
    for (_, charge), back, total, share in zip(runs, dev_back, refunded, shares, strict=True):
        assert 0 <= back <= share and total <= charge
        if total == charge:
            assert back == share
    assert all(t.total == 0 and t.entries >= 2 for t in billing.transaction_sums([inst.org_id, developer]))
