"""The tests' stand-in of Stripe's API answers the real ``stripe`` library as Stripe does."""

from __future__ import annotations

import pytest
import stripe
from support.fake_stripe import FakeStripe, form


@pytest.fixture
def served():
    with FakeStripe("sk_test_ok") as fake:
        yield fake


def _client(served: FakeStripe, key: str = "sk_test_ok") -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": served.url}, max_network_retries=0)


def test_form_decoding_nests_objects_and_lists():
    assert form(b"a=1&metadata[org_id]=o&capabilities[transfers][requested]=true&expand[0]=x&expand[1]=y") == {
        "a": "1", "metadata": {"org_id": "o"}, "capabilities": {"transfers": {"requested": "true"}},
        "expand": ["x", "y"]}


def test_a_wrong_key_is_401(served):
    with pytest.raises(stripe.AuthenticationError):
        _client(served, "sk_test_wrong").v1.customers.create()


def test_idempotency_replays_and_refuses_other_parameters(served):
    client = _client(served)
    first = client.v1.customers.create(params={"description": "a"}, options={"idempotency_key": "k1"})
    again = client.v1.customers.create(params={"description": "a"}, options={"idempotency_key": "k1"})
    assert again.id == first.id and len(served.objects("customer")) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"description": "b"}, options={"idempotency_key": "k1"})


def test_one_off_invoice_takes_pending_items_and_finalizes_once(served):
    client = _client(served)
    customer = client.v1.customers.create().id
    other = client.v1.customers.create().id
    for amount in (100, 250):
        client.v1.invoice_items.create(params={"customer": customer, "amount": amount, "currency": "usd"})
    client.v1.invoice_items.create(params={"customer": other, "amount": 7, "currency": "usd"})
    invoice = client.v1.invoices.create(params={"customer": customer, "pending_invoice_items_behavior": "include"})
    assert invoice.status == "draft" and invoice.total == 350 and len(invoice.lines.data) == 2
    assert client.v1.invoices.create(params={"customer": customer, "pending_invoice_items_behavior": "include"}
                                     ).total == 0  # the items were taken
    assert client.v1.invoices.finalize_invoice(invoice.id).status == "open"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.invoices.retrieve("in_nope")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_items.create(params={"customer": "cus_nope", "amount": 1, "currency": "usd"})


def test_transfers_need_an_existing_account(served):
    client = _client(served)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.create(params={"amount": 100, "currency": "usd", "destination": "acct_nope"})
    account = client.v1.accounts.create(params={"type": "express"}).id
    transfer = client.v1.transfers.create(params={"amount": 100, "currency": "usd", "destination": account})
    assert transfer.destination == account and transfer.amount == 100


def test_an_outage_is_a_503_and_nothing_is_stored(served):
    client = _client(served)
    served.fail("POST /v1/customers", times=1)
    with pytest.raises(stripe.APIError):
        client.v1.customers.create(options={"idempotency_key": "k2"})
    assert served.objects("customer") == []
    assert client.v1.customers.create(options={"idempotency_key": "k2"}).id.startswith("cus_")
