"""Invoices: the monthly cycle (drafts without Stripe, late usage as an adjustment), customers and
finalized invoices through the real ``stripe`` library against a stand-in of Stripe's API
(``support.fake_stripe``), and Stripe webhooks.

The cycle is global (one watermark over all usage), so the tests close far-future months in
increasing order and look only at their own org's invoices.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import stripe
from conftest import Client
from pydantic import SecretStr
from runs_support import install_builtin
from support.fake_stripe import FakeStripe

from functions.gateway import create_gateway
from shared.billing import Invoicing, Outcome
from shared.composition import build_container
from shared.kernel.ids import new_id
from shared.kernel.money import PricingSpec

PRICING = PricingSpec(base_usd=Decimal("0.50"), per_record_usd=Decimal("0.001"), per_cpu_hour_usd=Decimal("0.50"))
SECRET_KEY = "sk_test_marketplace"
WEBHOOK_SECRET = "whsec_test_marketplace"


@pytest.fixture(scope="module")
def fake_stripe():
    with FakeStripe(SECRET_KEY) as served:
        yield served


@pytest.fixture(scope="module")
def stripe_container(settings, container, fake_stripe):
    """The platform with Stripe settings (the session's container has none)."""
    built = build_container(settings.model_copy(update={
        "stripe_secret_key": SecretStr(SECRET_KEY), "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
        "stripe_api_base": fake_stripe.url,
        "billing_payment_grace_days": 0}), migrate=False)
    yield built
    built.close()


@pytest.fixture
def inst(container, make_org, anon, settings):
    return install_builtin(container, make_org, anon, settings)


def _charge(container, inst, at: datetime, records: int = 15_000) -> str:
    run_id = new_id("run")
    with container.db.transaction() as tx:
        container.billing.charge_run(tx, run_id=run_id, org_id=inst.org_id, agent_id=inst.agent_id, version="1.0.1",
                                     pricing=PRICING, outcome=Outcome.SUCCEEDED, records=records, cpu_seconds=7200,
                                     actor="test", at=at)
    return run_id


def _own(invoicing, org_id, period):
    return [i for i in invoicing.invoices(org_id).items if i.period == period]


def _signed(payload: bytes, secret: str = WEBHOOK_SECRET) -> str:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def test_without_stripe_invoices_stay_drafts_and_say_so(container, inst, member):
    _charge(container, inst, datetime(2040, 1, 10, tzinfo=UTC))
    _charge(container, inst, datetime(2040, 1, 11, tzinfo=UTC), records=1)  # 0.50 + 0.001 + 1.00 = 1.501
    created = container.invoicing.close_period(date(2040, 1, 1))
    assert created
    assert container.invoicing.close_period(date(2040, 1, 1)) == []  # closed once
    listed = inst.admin.get(f"/orgs/{inst.org_id}/invoices")
    assert listed.status == 200
    mine = [i for i in listed.body["items"] if i["period"] == "2040-01-01"]
    assert len(mine) == 1 and mine[0]["status"] == "draft" and "not configured" in mine[0]["note"]
    assert mine[0]["total_usd"] == "18.001" and mine[0]["total_cents"] == 1800
    one = inst.admin.get(f"/orgs/{inst.org_id}/invoices/{mine[0]['id']}").body
    assert [(line["kind"], line["runs"], line["amount_micros"], line["amount_cents"]) for line in one["lines"]] == [
        ("usage", 2, 18_001_000, 1800)]
    viewer = member(inst.admin, inst.org_id, "viewer")
    assert viewer.get(f"/orgs/{inst.org_id}/invoices").status == 403
    assert inst.admin.get(f"/orgs/{inst.org_id}/invoices/inv_nope").status == 404
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert "billing.invoice_created" in actions


def test_late_usage_lands_on_the_next_invoice_as_an_adjustment(container, inst):
    _charge(container, inst, datetime(2040, 2, 5, tzinfo=UTC))
    container.invoicing.close_period(date(2040, 2, 1))
    # A run of February whose charge commits after February was closed.
    _charge(container, inst, datetime(2040, 2, 28, 23, 59, tzinfo=UTC), records=1)
    # And one charged in April before March's cycle ran: it waits for April's.
    _charge(container, inst, datetime(2040, 4, 1, 0, 5, tzinfo=UTC), records=2)
    container.invoicing.close_period(date(2040, 3, 1))
    (march,) = _own(container.invoicing, inst.org_id, date(2040, 3, 1))
    lines = container.invoicing.invoice(inst.org_id, march.id).lines
    assert [(line.kind, line.usage_period, line.amount_micros) for line in lines] == [
        ("adjustment", date(2040, 2, 1), 1_501_000)]
    assert "Late usage from 2040-02" in lines[0].description
    container.invoicing.close_period(date(2040, 4, 1))
    (april,) = _own(container.invoicing, inst.org_id, date(2040, 4, 1))
    assert april.total_micros == 1_502_000


def test_invoices_and_customers_at_stripe(stripe_container, inst, fake_stripe):
    invoicing: Invoicing = stripe_container.invoicing
    _charge(stripe_container, inst, datetime(2040, 5, 3, tzinfo=UTC))
    invoicing.close_period(date(2040, 5, 1))
    assert invoicing.send_drafts() >= 1
    (may,) = _own(invoicing, inst.org_id, date(2040, 5, 1))
    assert may.status == "open" and may.stripe_invoice_id and may.note is None
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": fake_stripe.url})
    remote = client.v1.invoices.retrieve(may.stripe_invoice_id)
    assert remote.status == "open" and remote.total == 1650 and remote.currency == "usd"
    customer = remote.customer
    # The next month reuses the customer: created once.
    _charge(stripe_container, inst, datetime(2040, 6, 3, tzinfo=UTC), records=1)
    invoicing.close_period(date(2040, 6, 1))
    invoicing.send_drafts()
    (june,) = _own(invoicing, inst.org_id, date(2040, 6, 1))
    assert client.v1.invoices.retrieve(june.stripe_invoice_id).customer == customer
    assert len([c for c in client.v1.customers.list().data if c.to_dict().get("metadata", {}).get("org_id") == inst.org_id]) == 1


def test_stripe_webhooks_verified_once_paid_and_failed(stripe_container, container, inst, app):
    invoicing: Invoicing = stripe_container.invoicing
    _charge(stripe_container, inst, datetime(2040, 7, 3, tzinfo=UTC))
    invoicing.close_period(date(2040, 7, 1))
    invoicing.send_drafts()
    (july,) = _own(invoicing, inst.org_id, date(2040, 7, 1))
    gateway = Client(create_gateway(stripe_container))
    owed = stripe_container.billing.customer_balance(inst.org_id)

    def post(event_type: str, invoice_id: str, event_id: str, *, secret: str = WEBHOOK_SECRET):
        payload = json.dumps({"id": event_id, "object": "event", "type": event_type, "data": {
            "object": {"id": invoice_id, "object": "invoice"}}}).encode()
        return gateway.request("POST", "/billing/stripe/webhook", data=payload,
                               headers={"Content-Type": "application/json", "Stripe-Signature": _signed(payload, secret)})

    forged = post("invoice.paid", july.stripe_invoice_id, "evt_forged", secret="whsec_wrong")
    assert forged.status == 400 and forged.body["error"]["code"] == "invalid_signature"
    assert invoicing.invoice(inst.org_id, july.id).status == "open"
    paid = post("invoice.paid", july.stripe_invoice_id, "evt_paid_" + july.id)
    assert paid.status == 200 and paid.body["handled"] is True
    again = post("invoice.paid", july.stripe_invoice_id, "evt_paid_" + july.id)
    assert again.status == 200 and again.body["duplicate"] is True
    assert invoicing.invoice(inst.org_id, july.id).status == "paid"
    assert stripe_container.billing.customer_balance(inst.org_id) == owed - july.total_micros
    # The session's gateway has no Stripe settings: the endpoint is not there.
    assert Client(app).request("POST", "/billing/stripe/webhook", json={"id": "evt_x", "type": "x"}).status == 404
    # A failed payment: the org is warned, then frozen after the grace period (0 days here).
    _charge(stripe_container, inst, datetime(2040, 8, 3, tzinfo=UTC))
    invoicing.close_period(date(2040, 8, 1))
    invoicing.send_drafts()
    (august,) = _own(invoicing, inst.org_id, date(2040, 8, 1))
    failed = post("invoice.payment_failed", august.stripe_invoice_id, "evt_failed_" + august.id)
    assert failed.status == 200 and failed.body["handled"] is True
    assert invoicing.invoice(inst.org_id, august.id).status == "payment_failed"
    time.sleep(0.05)
    assert inst.org_id in invoicing.freeze_unpaid()
    assert stripe_container.billing.limits(inst.org_id).frozen
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert {"billing.invoice_paid", "billing.payment_failed", "billing.frozen", "billing.customer_created",
            "billing.invoice_finalized"} <= set(actions)


def test_an_outage_mid_send_leaves_the_draft_and_the_retry_bills_once(stripe_container, inst, fake_stripe):
    """Items and the invoice made, then Stripe down at the finalization: the draft stays; the next
    run replays the same idempotency keys, so Stripe holds one invoice with each line once."""
    invoicing: Invoicing = stripe_container.invoicing
    _charge(stripe_container, inst, datetime(2040, 10, 3, tzinfo=UTC))
    _charge(stripe_container, inst, datetime(2040, 10, 4, tzinfo=UTC), records=1)
    invoicing.close_period(date(2040, 10, 1))
    (october,) = _own(invoicing, inst.org_id, date(2040, 10, 1))
    fake_stripe.fail("POST /v1/invoices/", times=3)  # the adapter's first try and its two retries
    invoicing.send_drafts()
    assert invoicing.invoice(inst.org_id, october.id).status == "draft"
    stuck = [i for i in fake_stripe.objects("invoice") if i["metadata"].get("invoice_id") == october.id]
    assert [i["status"] for i in stuck] == ["draft"]
    invoicing.send_drafts()
    sent = invoicing.invoice(inst.org_id, october.id)
    assert sent.status == "open"
    remote = [i for i in fake_stripe.objects("invoice") if i["metadata"].get("invoice_id") == october.id]
    assert [(i["id"], i["status"], i["total"]) for i in remote] == [(sent.stripe_invoice_id, "open", 1800)]
    items = [i for i in fake_stripe.objects("invoiceitem") if i["metadata"].get("invoice_id") == october.id]
    assert [(i["amount"], i["invoice"]) for i in items] == [
        (line.amount_cents, sent.stripe_invoice_id) for line in invoicing.invoice(inst.org_id, october.id).lines]
