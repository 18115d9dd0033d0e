"""Invoices: the monthly billing cycle, sending invoices to the payment provider, its webhooks."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared.audit import AuditLog
from shared.billing.models import (
    STRIPE_CLEARING_ACCOUNT,
    InvoiceLineOut,
    InvoiceList,
    InvoiceOut,
    SubscriptionFee,
    WebhookReceipt,
    customer_account,
    micros_to_cents,
    period_of,
    split,
    usd,
)
from shared.billing.ports import InvalidProviderSignature, PaymentProvider, ProviderLine
from shared.billing.service import BillingEvents, BillingService, FrozenHook
from shared.deployments import DeploymentService, InstalledSpan
from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import BadRequest, ErrorCode, NotFound
from shared.kernel.ids import new_id

_Q = Queries("shared.billing")
_log = logging.getLogger(__name__)

DRAFT_NOTE = "Draft: Stripe is not configured (MARKETPLACE_STRIPE_SECRET_KEY), so this invoice was not sent."


def previous_period(today: date) -> date:
    """The month before the one ``today`` falls in (its first day)."""
    return period_of(today.replace(day=1) - timedelta(days=1))


def next_period(period: date) -> date:
    """The first day of the month after ``period``."""
    return period_of(period.replace(day=28) + timedelta(days=4))


def active_days(span: InstalledSpan, period: date) -> int:
    """The days (UTC) of month ``period`` on which the deployment was installed at some moment:
    the day it was installed and the day it was uninstalled both count."""
    last_day = next_period(period) - timedelta(days=1)
    first = max(span.installed_at.astimezone(UTC).date(), period)
    last = last_day if span.uninstalled_at is None else min(span.uninstalled_at.astimezone(UTC).date(), last_day)
    return max(0, (last - first).days + 1)


def subscription_fee(monthly_micros: int, days: int, period_days: int) -> int:
    """A month's fee for ``days`` of its ``period_days`` days, pro rata, rounded down to the
    micro-dollar (never more than the price list says; a whole month is the monthly price)."""
    return monthly_micros * days // period_days


class Invoicing:
    """Closes billing periods into invoices, sends them through the provider, handles its webhooks."""

    def __init__(self, db: Database, audit: AuditLog, billing: BillingService, provider: PaymentProvider | None, *,
                 deployments: DeploymentService, events: BillingEvents | None = None, grace_days: int = 7,
                 on_frozen: FrozenHook | None = None) -> None:
        self.db = db
        self.audit = audit
        self.billing = billing
        self.provider = provider
        self.deployments = deployments
        self.events = events
        self.grace_days = grace_days
        self.on_frozen = on_frozen

    # -- the cycle ----------------------------------------------------------------------------
    def run_cycle(self, today: date | None = None) -> int:
        """The scheduled job: close last month if not closed yet, send drafts, freeze orgs unpaid
        past the grace period. Safe to run any number of times; returns what it acted on."""
        created = self.close_period(previous_period(today or datetime.now(UTC).date()))
        return len(created) + self.send_drafts() + len(self.freeze_unpaid())

    def close_period(self, period: date) -> list[str]:
        """Invoice each org's usage of ``period`` (and late usage of earlier months) once; the
        invoices' ids (none when the period was closed already).

        Two transactions: the first takes the watermark under a SHARE lock on the usage table
        (held for two statements, so completions wait only that long) and records the cycle; the
        second aggregates and writes the invoices. A cycle interrupted between them is finished by
        the next call (each org's invoice of a period is written once).
        """
        period = period_of(period)
        with self.db.transaction() as tx:
            last = tx.fetch_one(_Q.last_cycle)
            if last is not None and (last["period"] > period or (last["period"] == period and last["invoiced_at"])):
                return []
            if last is None or last["period"] < period:
                tx.execute(_Q.lock_usage_for_watermark)
                through = int(tx.fetch_val(_Q.usage_watermark))
                tx.execute(_Q.lock_refunds_for_watermark)
                refunds_through = int(tx.fetch_val(_Q.refunds_watermark))
                after = int(last["through_seq"]) if last else 0
                refunds_after = int(last["refunds_through"]) if last else 0
                tx.execute(_Q.insert_cycle, period, through, after, refunds_through, refunds_after)
            else:
                through, after = int(last["through_seq"]), int(last["after_seq"])
                refunds_through, refunds_after = int(last["refunds_through"]), int(last["refunds_after"])
        with self.db.transaction() as tx:
            previous = tx.fetch_one(_Q.cycle_before, period)
            before = int(previous["after_seq"]) if previous else 0
            refunds_before = int(previous["refunds_after"]) if previous else 0
            prev_period = previous["period"] if previous else date(1970, 1, 1)
            rows = tx.fetch_all(_Q.cycle_lines, period, after, through, before, after, prev_period)
            by_org: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                by_org[row["org_id"]].append(row)
            for row in tx.fetch_all(_Q.cycle_refunds, period, refunds_after, refunds_through, refunds_before,
                                    refunds_after, prev_period):
                by_org[row["org_id"]].append({**row, "kind": "refund"})
            for row in self._charge_subscriptions(tx, period):
                by_org[row["org_id"]].append({**row, "kind": "subscription", "period": period})
            created = self._invoices(tx, period, by_org)
            tx.execute(_Q.mark_cycle_invoiced, period)
        return created

    def _invoices(self, tx: Tx, period: date, by_org: dict[str, list[dict[str, Any]]]) -> list[str]:
        """Write the cycle's invoices and their lines in three statements, whatever the number of orgs."""
        ids = {org_id: new_id("inv") for org_id in by_org}
        lines: list[tuple[Any, ...]] = []
        totals: dict[str, tuple[int, int]] = {}
        for org_id, rows in by_org.items():
            micros = cents = 0
            for number, row in enumerate(rows, start=1):
                late = row["period"] < period
                amount_cents = micros_to_cents(row["amount_micros"])
                if row.get("kind") == "refund":  # a credit: refunds of the org's runs, made that month
                    credit = -micros_to_cents(row["amount_micros"])
                    lines.append((ids[org_id], number, "refund", row["agent_id"], row["period"], 0,
                                  f"Refund of {row['refunds']} charge(s) of agent {row['agent_id']}, "
                                  f"{row['period']:%Y-%m}", -row["amount_micros"], credit))
                    micros -= row["amount_micros"]
                    cents += credit
                    continue
                if row.get("kind") == "subscription":
                    lines.append((ids[org_id], number, "subscription", row["agent_id"], period, 0,
                                  f"Subscription to agent {row['agent_id']} ({row['deployments']} deployment(s)), "
                                  f"{period:%Y-%m}", row["amount_micros"], amount_cents))
                    micros += row["amount_micros"]
                    cents += amount_cents
                    continue
                label = f"{row['runs']} run(s) of agent {row['agent_id']}"
                description = (f"Late usage from {row['period']:%Y-%m}: {label}" if late
                               else f"{label}, {period:%Y-%m}")
                lines.append((ids[org_id], number, "adjustment" if late else "usage", row["agent_id"], row["period"],
                               row["runs"], description, row["amount_micros"], amount_cents))
                micros += row["amount_micros"]
                cents += amount_cents
            totals[org_id] = (micros, cents)
        orgs = list(by_org)
        made = {row["id"] for row in tx.fetch_all(
            _Q.insert_invoices, period, DRAFT_NOTE if self.provider is None else None, [ids[o] for o in orgs], orgs,
            [totals[o][0] for o in orgs], [totals[o][1] for o in orgs])}
        kept = [line for line in lines if line[0] in made]
        if kept:
            tx.execute(_Q.insert_invoice_lines, *[list(column) for column in zip(*kept, strict=True)])
        for org_id in orgs:
            if ids[org_id] in made:
                self.audit.append(tx, org_id=org_id, actor="billing", action="billing.invoice_created",
                                  target=ids[org_id], details={"period": period.isoformat(),
                                                               "total_micros": totals[org_id][0],
                                                               "total_cents": totals[org_id][1],
                                                               "lines": len(by_org[org_id])})
        return [ids[o] for o in orgs if ids[o] in made]

    def _charge_subscriptions(self, tx: Tx, period: date) -> list[dict[str, Any]]:
        """Charge month ``period``'s subscription fees (once per deployment and month, whatever
        the number of cycle runs) and return the month's fees per org and agent.

        Each deployment installed at some moment of the month, of a version whose manifest has
        ``subscription_monthly_usd``, is charged that price pro rata of the days it was installed
        (``active_days``), split 80/20 like a run's charge, in one statement.
        """
        start = datetime.combine(period, time(), UTC)
        end_period = next_period(period)
        period_days = (end_period - period).days
        prices: dict[tuple[str, str], int] = {}
        columns: list[list[Any]] = [[] for _ in range(11)]
        for span in self.deployments.installed_during(tx, start, datetime.combine(end_period, time(), UTC)):
            key = (span.agent_id, span.version)
            if key not in prices:
                manifest = self.billing.catalog.version_manifest(tx, span.agent_id, span.version)
                prices[key] = 0 if manifest is None else manifest.pricing.subscription_monthly_micros
            days = active_days(span, period)
            fee = subscription_fee(prices[key], days, period_days) if days else 0
            if fee <= 0:
                continue
            developer, platform = split(fee)
            for column, value in zip(columns, (
                    span.id, span.org_id, span.agent_id, span.version, self.billing.publisher_of(tx, span.agent_id),
                    days, prices[key], fee, developer, platform, new_id("ltx")), strict=True):
                column.append(value)
        if columns[0]:
            tx.execute(_Q.charge_subscriptions, *columns, period, period_days)
        return tx.fetch_all(_Q.subscriptions_of_period, period)

    def subscriptions(self, org_id: str) -> list[SubscriptionFee]:
        """The subscription fees an org was charged, oldest month first."""
        with self.db.read() as tx:
            return [SubscriptionFee(**row) for row in tx.fetch_all(_Q.subscriptions_of_org, org_id)]

    def send_drafts(self, limit: int = 100) -> int:
        """Send draft invoices to the provider (creating each org's customer once); how many."""
        if self.provider is None:
            return 0
        with self.db.read() as tx:
            drafts = tx.fetch_all(_Q.drafts_to_send, limit)
        sent = 0
        for draft in drafts:
            try:
                self._send(draft)
                sent += 1
            except Exception:  # noqa: BLE001 - a provider outage: the draft stays, the next cycle run retries
                _log.exception("sending invoice %s failed", draft["id"])
        return sent

    def _send(self, draft: dict[str, Any]) -> None:
        assert self.provider is not None
        org_id = draft["org_id"]
        customer = self._customer(org_id)
        with self.db.read() as tx:
            lines = tx.fetch_all(_Q.invoice_lines, draft["id"])
        stripe_id = self.provider.send_invoice(
            customer_id=customer, invoice_id=draft["id"],
            lines=[ProviderLine(description=line["description"], amount_cents=line["amount_cents"]) for line in lines])
        with self.db.transaction() as tx:
            if tx.fetch_val(_Q.mark_sent, stripe_id, draft["id"]) is not None:
                self.audit.append(tx, org_id=org_id, actor="billing", action="billing.invoice_finalized",
                                  target=draft["id"], details={"stripe_invoice_id": stripe_id,
                                                               "total_cents": draft["total_cents"]})

    def _customer(self, org_id: str) -> str:
        """The org's provider customer, created once (an idempotency key guards a retried creation)."""
        assert self.provider is not None
        with self.db.read() as tx:
            found = tx.fetch_val(_Q.customer, org_id)
        if found is not None:
            return str(found)
        created = self.provider.create_customer(org_id=org_id, idempotency_key=f"customer-{org_id}")
        with self.db.transaction() as tx:
            tx.execute(_Q.insert_customer, org_id, created)
            kept = str(tx.fetch_val(_Q.customer, org_id))
            if kept == created:
                self.audit.append(tx, org_id=org_id, actor="billing", action="billing.customer_created",
                                  target=org_id, details={"stripe_customer_id": created})
        return kept

    def freeze_unpaid(self) -> list[str]:
        """Freeze the spend of orgs whose invoice payment failed longer ago than the grace period."""
        with self.db.read() as tx:
            orgs = [row["org_id"] for row in tx.fetch_all(_Q.unpaid_past_grace, self.grace_days)]
        for org_id in orgs:
            self.billing.set_frozen(None, org_id, frozen=True, actor="billing",
                                    reason=f"an invoice is unpaid {self.grace_days} days after its payment failed")
            if self.on_frozen is not None:  # the runs context cancels the org's runs (the kill switch's freeze)
                self.on_frozen(org_id, "billing")
        return orgs

    # -- reading ------------------------------------------------------------------------------
    def invoices(self, org_id: str, limit: int = 24) -> InvoiceList:
        """An org's invoices, newest period first."""
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.invoices_of_org, org_id, limit)
        return InvoiceList(items=[_invoice_out(row, None) for row in rows])

    def invoice(self, org_id: str, invoice_id: str) -> InvoiceOut:
        """One invoice of the org with its lines."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.invoice, invoice_id, org_id)
            lines = tx.fetch_all(_Q.invoice_lines, invoice_id) if row is not None else []
        if row is None:
            raise NotFound("invoice not found")
        return _invoice_out(row, lines)

    # -- provider webhooks ----------------------------------------------------------------------
    def handle_webhook(self, payload: bytes, signature: str) -> WebhookReceipt:
        """A provider event: verified, handled once per event id (a redelivery changes nothing)."""
        if self.provider is None:
            raise NotFound("Stripe is not configured")
        try:
            event = self.provider.verify_event(payload, signature)
        except InvalidProviderSignature:
            raise BadRequest("the Stripe signature does not verify", code=ErrorCode.INVALID_SIGNATURE) from None
        with self.db.transaction() as tx:
            if tx.fetch_val(_Q.record_stripe_event, event.id, event.type) is None:
                return WebhookReceipt(event_id=event.id, type=event.type, handled=False, duplicate=True)
            handled = False
            if event.type in ("invoice.paid", "invoice.payment_failed") and event.invoice_id:
                invoice = tx.fetch_one(_Q.invoice_by_stripe_id, event.invoice_id)
                if invoice is not None:
                    handled = self._invoice_event(tx, event.type, invoice)
        return WebhookReceipt(event_id=event.id, type=event.type, handled=handled, duplicate=False)

    def _invoice_event(self, tx: Tx, kind: str, invoice: dict[str, Any]) -> bool:
        org_id = invoice["org_id"]
        if kind == "invoice.paid":
            if invoice["status"] not in ("open", "payment_failed"):
                return False
            tx.execute(_Q.mark_paid, invoice["id"])
            # The money reached Stripe: the org owes that much less (an invoice whose refunds cancel
            # its charges collects nothing).
            if invoice["total_micros"] > 0:
                BillingService.post(tx, kind="invoice_payment", org_id=org_id,
                                    entries=[(STRIPE_CLEARING_ACCOUNT, invoice["total_micros"]),
                                             (customer_account(org_id), -invoice["total_micros"])],
                                    memo={"invoice_id": invoice["id"]})
            self.audit.append(tx, org_id=org_id, actor="stripe", action="billing.invoice_paid", target=invoice["id"],
                              details={"total_micros": invoice["total_micros"]})
            return True
        if invoice["status"] not in ("open", "payment_failed"):
            return False
        tx.execute(_Q.mark_payment_failed, invoice["id"])
        data = {"invoice_id": invoice["id"], "period": invoice["period"].isoformat(),
                "total_usd": usd(invoice["total_micros"]), "grace_days": self.grace_days}
        self.audit.append(tx, org_id=org_id, actor="stripe", action="billing.payment_failed", target=invoice["id"],
                          details=data)
        if self.events is not None:
            self.events(tx, org_id=org_id, event="billing.payment_failed", data=data)
        return True


def _invoice_out(row: dict[str, Any], lines: list[dict[str, Any]] | None) -> InvoiceOut:
    return InvoiceOut(
        id=row["id"], org_id=row["org_id"], period=row["period"], status=row["status"],
        total_usd=usd(row["total_micros"]), total_micros=row["total_micros"], total_cents=row["total_cents"],
        stripe_invoice_id=row["stripe_invoice_id"], note=row["note"], created_at=row["created_at"],
        finalized_at=row["finalized_at"], paid_at=row["paid_at"], payment_failed_at=row["payment_failed_at"],
        lines=None if lines is None else [
            InvoiceLineOut(line_no=line["line_no"], kind=line["kind"], agent_id=line["agent_id"],
                           usage_period=line["usage_period"], runs=line["run_count"], description=line["description"],
                           amount_usd=usd(line["amount_micros"]), amount_micros=line["amount_micros"],
                           amount_cents=line["amount_cents"]) for line in lines])
