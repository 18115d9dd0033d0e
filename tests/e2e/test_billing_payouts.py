"""Developer earnings and payouts: the API, the monthly job (>= 100 USD, smaller balances carried
over, a refund after a payout leaves a negative balance), and Stripe Connect through the real
``stripe`` library against a stand-in of Stripe's API (``support.fake_stripe``), asserting the exact
requests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from registry_support import make_manifest, publish
from runs_support import install_builtin
from support.fake_stripe import FakeStripe, form

from shared.billing import OnboardingIn, Outcome, Payouts
from shared.billing.adapters.stripe_payments import StripePayments
from shared.kernel.ids import new_id
from shared.kernel.money import PricingSpec

PRICING = PricingSpec(base_usd=Decimal("0.50"), per_record_usd=Decimal("0.001"), per_cpu_hour_usd=Decimal("0.50"))


@pytest.fixture
def inst(container, make_org, anon, settings):
    return install_builtin(container, make_org, anon, settings)


@pytest.fixture
def developer(container, make_org, make_user):
    """A developer org with a published agent of its own (``_charge`` below posts charges for it)."""
    admin, org_id = make_org("Dev Co")
    agent_id = publish(admin, org_id, make_user("platform", platform_admin=True), make_manifest())
    return admin, org_id, agent_id


def _charge(container, inst, agent_id: str, records: int) -> str:
    """A run of the developer's agent ``agent_id`` in ``inst``'s org, charged as its completion would be."""
    run_id = new_id("run")
    with container.db.transaction() as tx:
        container.billing.charge_run(tx, run_id=run_id, org_id=inst.org_id, agent_id=agent_id, version="1.0.0",
                                     pricing=PRICING, outcome=Outcome.SUCCEEDED, records=records, cpu_seconds=0,
                                     actor="test", at=datetime(2041, 1, 5, tzinfo=UTC))
    return run_id


class Requests:
    """What reached the stand-in since the last ``take()``: method, path, decoded form, idempotency key."""

    def __init__(self, served: FakeStripe) -> None:
        self._served, self._seen = served, 0

    def take(self) -> list[dict[str, Any]]:
        received = self._served.server.received()
        new, self._seen = received[self._seen:], len(received)
        return [{"method": r.method, "path": r.path, "form": form(r.body),
                 "idempotency_key": r.headers.get("idempotency-key")} for r in new]


def test_payouts_of_100_usd_or_more_carry_smaller_balances_and_refunds_go_negative(container, inst, developer):
    dev_admin, dev_org, dev_agent = developer
    with FakeStripe("sk_test_x") as served:
        _payouts(container, inst, dev_admin, dev_org, dev_agent, served)


def _payouts(container, inst, dev_admin, dev_org: str, dev_agent: str, served: FakeStripe) -> None:
    http = Requests(served)
    payouts = Payouts(container.db, container.audit, container.billing, StripePayments("sk_test_x", api_base=served.url))
    onboarding = payouts.onboard("user:test", dev_org, _onboarding())
    account = onboarding.stripe_account_id
    assert account.startswith("acct_") and onboarding.onboarding_url.startswith(f"https://connect.stripe.com/setup/e/{account}/")
    assert payouts.onboard("user:test", dev_org, _onboarding()).stripe_account_id == account  # once
    requests = http.take()
    assert [r["path"] for r in requests] == ["/v1/accounts", "/v1/account_links", "/v1/account_links"]
    assert requests[0]["form"] == {"type": "express", "country": "US", "metadata": {"org_id": dev_org},
                                   "capabilities": {"transfers": {"requested": "true"}}}
    assert requests[0]["idempotency_key"] == f"connect-{dev_org}"
    assert [a["id"] for a in served.objects("account")] == [account]

    # 0.50 + 0.001 * 99,000 = 99.50 USD charged: the developer earns 79.60, under the minimum.
    first = _charge(container, inst, dev_agent, 99_000)
    assert payouts.pay_out(date(2041, 1, 1)) == [] and http.take() == []
    # Another 50.50 (developer 40.40): 120.00 USD owed, paid out in February's run.
    _charge(container, inst, dev_agent, 50_000)
    assert container.billing.developer_balance(dev_org) == 120_000_000
    paid = payouts.pay_out(date(2041, 2, 1))
    assert len(paid) == 1
    assert http.take() == [{"method": "POST", "path": "/v1/transfers", "form": {
        "amount": "12000", "currency": "usd", "destination": account,
        "description": "marketplace earnings through 2041-02"}, "idempotency_key": f"payout-{paid[0]}-12000"}]
    assert payouts.pay_out(date(2041, 2, 1)) == []  # once per month
    assert container.billing.developer_balance(dev_org) == 0
    # A refund after the payout: the developer owes the platform until later earnings repay it.
    container.billing.refund_run(first, actor="test")
    assert container.billing.developer_balance(dev_org) == -79_600_000
    assert payouts.pay_out(date(2041, 3, 1)) == [] and http.take() == []
    listed = dev_admin.get(f"/developers/{dev_org}/payouts").body
    assert listed["balance_usd"] == "-79.60"
    assert [(p["id"], p["amount_usd"], p["status"]) for p in listed["items"]] == [(paid[0], "120.00", "paid")]
    assert [(t["id"], t["amount"], t["destination"]) for t in served.objects("transfer")] == [
        (listed["items"][0]["stripe_transfer_id"], 12000, account)]
    earnings = dev_admin.get(f"/developers/{dev_org}/earnings").body
    # One agent, one month: 99.50 + 50.50 earned, the first run's share refunded.
    assert [(e["agent_id"], e["gross_usd"], e["developer_share_usd"], e["platform_fee_usd"],
             e["developer_refunded_usd"]) for e in earnings["items"]] == [
        (dev_agent, "150.00", "120.00", "30.00", "79.60")]
    assert earnings["balance_usd"] == "-79.60" and earnings["payout_minimum_usd"] == "100.00"


def test_earnings_and_payouts_are_for_the_developer_orgs_admins(container, inst, developer, member, make_org):
    dev_admin, dev_org, _ = developer
    viewer = member(dev_admin, dev_org, "viewer")
    assert viewer.get(f"/developers/{dev_org}/earnings").status == 403
    assert viewer.get(f"/developers/{dev_org}/payouts").status == 403
    stranger, _ = make_org()
    assert stranger.get(f"/developers/{dev_org}/earnings").status == 404
    # Without Stripe settings there is no Connect onboarding.
    resp = dev_admin.post(f"/developers/{dev_org}/payouts/onboarding", json={
        "refresh_url": "https://example.com/refresh", "return_url": "https://example.com/done"})
    assert resp.status == 409 and resp.body["error"]["code"] == "no_payout_account"
    assert dev_admin.post(f"/developers/{dev_org}/payouts/onboarding", json={"refresh_url": "nope"}).status == 422


def _onboarding() -> OnboardingIn:
    return OnboardingIn(refresh_url="https://example.com/refresh", return_url="https://example.com/done")
