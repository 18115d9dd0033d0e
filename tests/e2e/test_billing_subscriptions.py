"""Subscription fees and refund credits in the billing cycle.

Subscription fees: pro rata of the days a deployment was installed, split
80/20 in the ledger, an invoice line, exactly once per deployment and month however often (or
however concurrently) the cycle runs.

The cycle is global (one watermark over all usage, months closed in increasing order), so these
tests close months of 2045 and later, after those of test_billing_invoices.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from registry_support import make_manifest, publish
from runs_support import install_builtin
from test_billing_invoices import PRICING

from shared.billing import Outcome
from shared.billing.invoices import active_days, next_period, subscription_fee
from shared.deployments import InstalledSpan
from shared.kernel.ids import new_id


@pytest.fixture
def subscribed(make_org, make_user):
    """A developer's agent at 31 USD a month (1 USD a day in a 31-day month) and a customer org."""
    dev, dev_org = make_org("Developer")
    padmin = make_user("platform", platform_admin=True)
    manifest = make_manifest(pricing={"base_usd": "0", "per_record_usd": "0", "per_cpu_hour_usd": "0",
                                      "subscription_monthly_usd": "31"})
    agent_id = publish(dev, dev_org, padmin, manifest)
    admin, org_id = make_org("Customer")
    return {"agent_id": agent_id, "dev_org": dev_org, "dev": dev, "org_id": org_id, "admin": admin}


def _deployment(container, org_id: str, agent_id: str, *, created: datetime | None = None,
                uninstalled: datetime | None = None, status: str = "ready") -> str:
    """A deployment row as the install flow leaves it, installed (and uninstalled) when the test says."""
    deployment_id = new_id("dep")
    with container.db.transaction() as tx:
        tx.execute("INSERT INTO deployments (id, org_id, agent_id, version, deployment_type, status, created_by, "
                   "created_at, uninstalled_at) VALUES (%s, %s, %s, '1.0.0', 'saas', %s, 'test', "
                   "coalesce(%s, now()), %s)", deployment_id, org_id, agent_id,
                   "uninstalled" if uninstalled else status, created, uninstalled)
    return deployment_id


def _own(invoicing, org_id, period):
    return [i for i in invoicing.invoices(org_id).items if i.period == period]


def test_each_installed_deployment_pays_its_days_once(container, subscribed):
    org_id, agent_id = subscribed["org_id"], subscribed["agent_id"]
    billing, invoicing = container.billing, container.invoicing
    whole = _deployment(container, org_id, agent_id)  # installed before the month, still installed
    _deployment(container, org_id, agent_id, created=datetime(2045, 1, 11, 9, tzinfo=UTC),
                uninstalled=datetime(2045, 1, 20, 17, tzinfo=UTC))  # 11th to 20th: 10 days
    _deployment(container, org_id, agent_id, uninstalled=datetime.now(UTC))  # gone before the month
    _deployment(container, org_id, agent_id, status="failed")  # never ran
    _deployment(container, org_id, agent_id, created=datetime(2045, 2, 1, tzinfo=UTC))  # after the month
    owed, earned = billing.customer_balance(org_id), billing.developer_balance(subscribed["dev_org"])
    invoicing.close_period(date(2045, 1, 1))
    (january,) = _own(invoicing, org_id, date(2045, 1, 1))
    assert january.total_micros == 41_000_000
    lines = invoicing.invoice(org_id, january.id).lines
    assert [(line.kind, line.agent_id, line.amount_micros) for line in lines] == [
        ("subscription", agent_id, 41_000_000)]
    assert "2 deployment(s)" in lines[0].description
    fees = {f.deployment_id: f for f in invoicing.subscriptions(org_id)}
    assert fees[whole].active_days == 31 and fees[whole].charge_micros == 31_000_000
    assert sorted(f.active_days for f in fees.values()) == [10, 31]
    # Split 80/20 like a run's charge; every transaction balances.
    assert billing.customer_balance(org_id) == owed + 41_000_000
    assert billing.developer_balance(subscribed["dev_org"]) == earned + 32_800_000
    assert all(t.total == 0 for t in billing.transaction_sums([org_id]))
    kinds = [t.kind for t in billing.transaction_sums([org_id])]
    assert kinds.count("subscription") == 2
    # The developer's earnings show the month's subscriptions.
    earnings = subscribed["dev"].get(f"/developers/{subscribed['dev_org']}/earnings").body
    assert any(e["agent_id"] == agent_id and e["gross_micros"] == 41_000_000 for e in earnings["items"])
    # Again: nothing more.
    assert invoicing.close_period(date(2045, 1, 1)) == []
    with container.db.transaction() as tx:  # the cycle's statement itself, run a second time
        invoicing._charge_subscriptions(tx, date(2045, 1, 1))
    assert billing.customer_balance(org_id) == owed + 41_000_000
    assert len(invoicing.subscriptions(org_id)) == 2


def test_concurrent_cycles_charge_each_subscription_once(container, subscribed):
    org_id, agent_id = subscribed["org_id"], subscribed["agent_id"]
    for _ in range(3):
        _deployment(container, org_id, agent_id)
    owed = container.billing.customer_balance(org_id)
    period = date(2045, 2, 1)  # 28 days: a whole month is the monthly price
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def cycle() -> None:
        try:
            barrier.wait()
            container.invoicing.close_period(period)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=cycle) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    (february,) = _own(container.invoicing, org_id, period)
    assert february.total_micros == 93_000_000
    assert container.billing.customer_balance(org_id) == owed + 93_000_000
    assert len([f for f in container.invoicing.subscriptions(org_id) if f.period == period]) == 3


def test_refunds_are_credited_once_on_the_next_invoice(container, make_org, anon, settings, make_user):
    inst = install_builtin(container, make_org, anon, settings)
    run_id = new_id("run")
    with container.db.transaction() as tx:
        container.billing.charge_run(tx, run_id=run_id, org_id=inst.org_id, agent_id=inst.agent_id, version="1.0.1",
                                     pricing=PRICING, outcome=Outcome.SUCCEEDED, records=15_000, cpu_seconds=7200,
                                     actor="test", at=datetime(2045, 3, 5, tzinfo=UTC))
    padmin = make_user("platform", platform_admin=True)
    refund = padmin.post(f"/admin/runs/{run_id}/refund", json={"amount_usd": "5.004999", "reason": "x"})
    assert refund.status == 200, refund
    container.invoicing.close_period(date(2045, 3, 1))
    (march,) = _own(container.invoicing, inst.org_id, date(2045, 3, 1))
    lines = container.invoicing.invoice(inst.org_id, march.id).lines
    assert [(line.kind, line.amount_micros, line.amount_cents) for line in lines] == [
        ("usage", 16_500_000, 1650), ("refund", -5_004_999, -500)]
    assert march.total_micros == 11_495_001 and march.total_cents == 1150
    container.invoicing.close_period(date(2045, 4, 1))
    assert _own(container.invoicing, inst.org_id, date(2045, 4, 1)) == []  # credited once


_MONTHS = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 1)).map(lambda d: d.replace(day=1))


@given(period=_MONTHS, start=st.integers(-40, 40), length=st.integers(0, 80) | st.none(),
       monthly=st.integers(1, 10**12))
def test_a_fee_is_never_more_than_the_monthly_price_and_a_whole_month_is_exactly_it(period, start, length, monthly):
    installed = datetime(period.year, period.month, 1, 12, tzinfo=UTC) + timedelta(days=start)
    uninstalled = None if length is None else installed + timedelta(days=length)
    span = InstalledSpan(id="dep", org_id="org", agent_id="agt", version="1", installed_at=installed,
                         uninstalled_at=uninstalled)
    period_days = (next_period(period) - period).days
    days = active_days(span, period)
    assert 0 <= days <= period_days
    fee = subscription_fee(monthly, days, period_days)
    assert 0 <= fee <= monthly
    if installed.date() <= period and (uninstalled is None or uninstalled.date() >= next_period(period)
                                         - timedelta(days=1)):
        assert days == period_days and fee == monthly
