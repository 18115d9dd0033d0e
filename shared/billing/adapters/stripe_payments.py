"""The payment provider on Stripe, through the ``stripe`` library's ``StripeClient``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import stripe
from stripe.params import AccountCreateParams

from shared.billing.ports import InvalidProviderSignature, ProviderEvent, ProviderLine

CURRENCY = "usd"
RETRIES = 2  # the library retries a connection error, a 409 lock conflict or a 5xx with the same idempotency key


class StripePayments:
    """``PaymentProvider`` on Stripe (or a Stripe-compatible server at ``api_base``: the tests' stand-in).

    Every write carries an idempotency key, so the library's retries and the next cycle's retry of
    a failed send never make a second customer, invoice item, invoice or transfer.
    """

    def __init__(self, secret_key: str, *, webhook_secret: str | None = None, api_base: str | None = None) -> None:
        options: dict[str, Any] = {"max_network_retries": RETRIES}
        if api_base:
            options["base_addresses"] = {"api": api_base, "connect": api_base, "files": api_base}
        self._client = stripe.StripeClient(secret_key, **options)
        self._webhook_secret = webhook_secret

    def create_customer(self, *, org_id: str, idempotency_key: str) -> str:
        customer = self._client.v1.customers.create(
            params={"description": f"marketplace org {org_id}", "metadata": {"org_id": org_id}},
            options={"idempotency_key": idempotency_key})
        return str(customer.id)

    def send_invoice(self, *, customer_id: str, invoice_id: str, lines: Sequence[ProviderLine]) -> str:
        for number, line in enumerate(lines, start=1):
            self._client.v1.invoice_items.create(
                params={"customer": customer_id, "amount": line.amount_cents, "currency": CURRENCY,
                        "description": line.description, "metadata": {"invoice_id": invoice_id}},
                options={"idempotency_key": f"{invoice_id}-item-{number}"})
        invoice = self._client.v1.invoices.create(
            params={"customer": customer_id, "metadata": {"invoice_id": invoice_id},
                    "pending_invoice_items_behavior": "include"},
            options={"idempotency_key": f"{invoice_id}-invoice"})
        assert invoice.id is not None
        finalized = self._client.v1.invoices.finalize_invoice(invoice.id, options={
            "idempotency_key": f"{invoice_id}-finalize"})
        return str(finalized.id)

    def verify_event(self, payload: bytes, signature: str) -> ProviderEvent:
        if not self._webhook_secret:
            raise InvalidProviderSignature("no webhook secret is configured")
        try:
            event = stripe.Webhook.construct_event(payload.decode("utf-8"), signature, self._webhook_secret)
        except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidProviderSignature(str(exc)) from None
        obj = event.to_dict().get("data", {}).get("object") or {}
        invoice_id = obj.get("id") if obj.get("object") == "invoice" else None
        return ProviderEvent(id=str(event.id), type=str(event.type),
                             invoice_id=str(invoice_id) if invoice_id is not None else None)

    def create_connect_account(self, *, org_id: str, email: str | None, idempotency_key: str) -> str:
        params: AccountCreateParams = {"type": "express", "country": "US", "metadata": {"org_id": org_id},
                                       "capabilities": {"transfers": {"requested": True}}}
        if email:
            params["email"] = email
        account = self._client.v1.accounts.create(params=params, options={"idempotency_key": idempotency_key})
        return str(account.id)

    def onboarding_link(self, *, account_id: str, refresh_url: str, return_url: str) -> str:
        link = self._client.v1.account_links.create(params={
            "account": account_id, "refresh_url": refresh_url, "return_url": return_url,
            "type": "account_onboarding"})
        return str(link.url)

    def transfer(self, *, account_id: str, amount_cents: int, idempotency_key: str, description: str) -> str:
        transfer = self._client.v1.transfers.create(
            params={"amount": amount_cents, "currency": CURRENCY, "destination": account_id,
                    "description": description},
            options={"idempotency_key": idempotency_key})
        return str(transfer.id)
