"""Developer earnings and payouts: Stripe Connect onboarding and the monthly payout job."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from shared.audit import AuditLog
from shared.billing.invoices import previous_period
from shared.billing.models import (
    MICROS_PER_CENT,
    PAYOUT_MINIMUM_MICROS,
    EarningsOut,
    MonthEarningsOut,
    OnboardingIn,
    OnboardingOut,
    PayoutList,
    PayoutOut,
    period_of,
    usd,
)
from shared.billing.ports import PaymentProvider
from shared.billing.service import BillingService
from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode
from shared.kernel.ids import new_id

_Q = Queries("shared.billing")
_log = logging.getLogger(__name__)


class Payouts:
    """What developers earned, their Connect accounts, and the monthly transfer of their balance."""

    def __init__(self, db: Database, audit: AuditLog, billing: BillingService, provider: PaymentProvider | None, *,
                 minimum_micros: int = PAYOUT_MINIMUM_MICROS) -> None:
        self.db = db
        self.audit = audit
        self.billing = billing
        self.provider = provider
        self.minimum_micros = minimum_micros

    def earnings(self, org_id: str, limit: int = 240) -> EarningsOut:
        """Per agent and month: gross charged, the developer's share, the platform's fee; and the balance."""
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.earnings, org_id, org_id, org_id, limit)
        return EarningsOut(
            org_id=org_id, balance_usd=usd(self.billing.developer_balance(org_id)),
            payout_minimum_usd=usd(self.minimum_micros),
            items=[MonthEarningsOut(agent_id=r["agent_id"], period=r["period"], runs=r["run_count"],
                                    gross_usd=usd(r["gross_micros"]), developer_share_usd=usd(r["developer_micros"]),
                                    platform_fee_usd=usd(r["platform_micros"]), gross_micros=r["gross_micros"],
                                    developer_share_micros=r["developer_micros"],
                                    platform_fee_micros=r["platform_micros"],
                                    refunded_usd=usd(r["refunded_micros"]), refunded_micros=r["refunded_micros"],
                                    developer_refunded_usd=usd(r["developer_refunded_micros"]),
                                    developer_refunded_micros=r["developer_refunded_micros"]) for r in rows])

    def payouts(self, org_id: str, limit: int = 120) -> PayoutList:
        """A developer org's payouts, newest month first."""
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.payouts_of_org, org_id, limit)
        return PayoutList(balance_usd=usd(self.billing.developer_balance(org_id)), items=[
            PayoutOut(id=r["id"], period=r["period"], amount_usd=usd(r["amount_micros"]),
                      amount_micros=r["amount_micros"], amount_cents=r["amount_cents"], status=r["status"],
                      stripe_transfer_id=r["stripe_transfer_id"], error=r["error"], created_at=r["created_at"],
                      paid_at=r["paid_at"]) for r in rows])

    def onboard(self, actor: str, org_id: str, body: OnboardingIn) -> OnboardingOut:
        """The org's Stripe Connect account (created once) and a link to complete its onboarding."""
        if self.provider is None:
            raise Conflict("Stripe is not configured: payouts are not available",
                           code=ErrorCode.NO_PAYOUT_ACCOUNT)
        with self.db.read() as tx:
            account = tx.fetch_val(_Q.payout_account, org_id)
        if account is None:
            created = self.provider.create_connect_account(org_id=org_id, email=None,
                                                           idempotency_key=f"connect-{org_id}")
            with self.db.transaction() as tx:
                tx.execute(_Q.insert_payout_account, org_id, created)
                account = tx.fetch_val(_Q.payout_account, org_id)
                if account == created:
                    self.audit.append(tx, org_id=org_id, actor=actor, action="billing.payout_account_created",
                                      target=org_id, details={"stripe_account_id": created})
        url = self.provider.onboarding_link(account_id=str(account), refresh_url=str(body.refresh_url),
                                            return_url=str(body.return_url))
        return OnboardingOut(stripe_account_id=str(account), onboarding_url=url)

    def run_monthly(self, today: date | None = None) -> int:
        """The scheduled job: pay last month's payouts (once per org and month); how many were paid."""
        return len(self.pay_out(previous_period(today or datetime.now(UTC).date())))

    def pay_out(self, period: date) -> list[str]:
        """Transfer each developer's balance when it reached the minimum (whole cents; the rest and
        smaller balances carry over to the next month). Developers without a Connect account wait."""
        if self.provider is None:
            return []
        period = period_of(period)
        with self.db.read() as tx:
            owed = tx.fetch_all(_Q.developer_balances, self.minimum_micros)
        paid = []
        for row in owed:
            org_id, balance = row["org_id"], int(row["owed_micros"])
            with self.db.read() as tx:
                account = tx.fetch_val(_Q.payout_account, org_id)
            if account is None:
                continue
            cents = balance // MICROS_PER_CENT
            with self.db.transaction() as tx:
                claimed = tx.fetch_one(_Q.claim_payout, new_id("po"), org_id, period, cents * MICROS_PER_CENT, cents)
            if claimed is None:
                continue  # this month's payout happened already
            try:
                transfer = self.provider.transfer(account_id=str(account), amount_cents=cents,
                                                  idempotency_key=f"payout-{claimed['id']}-{cents}",
                                                  description=f"marketplace earnings through {period:%Y-%m}")
            except Exception as exc:  # noqa: BLE001 - recorded; the next run tries again
                _log.exception("payout %s failed", claimed["id"])
                with self.db.transaction() as tx:
                    tx.execute(_Q.payout_failed, str(exc)[:500], claimed["id"])
                continue
            with self.db.transaction() as tx:
                tx.execute(_Q.payout_paid, transfer, claimed["id"])
                self.billing.record_payout(tx, org_id, cents * MICROS_PER_CENT, transfer_id=transfer)
                self.audit.append(tx, org_id=org_id, actor="billing", action="billing.payout_paid",
                                  target=claimed["id"], details={"amount_cents": cents, "transfer_id": transfer,
                                                                 "period": period.isoformat()})
            paid.append(str(claimed["id"]))
        return paid
