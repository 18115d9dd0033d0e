"""Billing's ports: the payment provider (Stripe) behind invoices, webhooks and payouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ProviderLine:
    """One invoice item as the provider bills it: whole cents."""

    description: str
    amount_cents: int


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified provider webhook event: its id, its type and the provider's invoice it concerns."""

    id: str
    type: str
    invoice_id: str | None


class InvalidProviderSignature(Exception):
    """A webhook whose signature does not verify (or whose payload is not an event)."""


class PaymentProvider(Protocol):
    """Customers, invoices, webhook verification and Connect transfers at the payment provider.

    Every call that creates something takes an idempotency key: a call repeated after a failure
    (a lost answer, a crash) creates nothing twice.
    """

    def create_customer(self, *, org_id: str, idempotency_key: str) -> str:
        """Create the org's customer; its provider id."""
        ...

    def send_invoice(self, *, customer_id: str, invoice_id: str, lines: Sequence[ProviderLine]) -> str:
        """Add ``lines`` as invoice items, create the invoice and finalize it; the provider's invoice id."""
        ...

    def verify_event(self, payload: bytes, signature: str) -> ProviderEvent:
        """The event a webhook delivers, when its signature verifies; else ``InvalidProviderSignature``."""
        ...

    def create_connect_account(self, *, org_id: str, email: str | None, idempotency_key: str) -> str:
        """An Express Connect account for a developer org; its id."""
        ...

    def onboarding_link(self, *, account_id: str, refresh_url: str, return_url: str) -> str:
        """A one-time URL where the developer completes the account's onboarding."""
        ...

    def transfer(self, *, account_id: str, amount_cents: int, idempotency_key: str, description: str) -> str:
        """Transfer ``amount_cents`` USD to a connected account; the transfer's id."""
        ...
