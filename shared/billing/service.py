"""Billing's use cases: meter and charge runs exactly once, post balanced ledger transactions."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from shared.audit import AuditLog
from shared.billing.models import (
    ALERT_PERCENTS,
    PLATFORM_ACCOUNT,
    AgentUsageOut,
    BillingLimitsIn,
    BillingLimitsOut,
    Charge,
    DayUsageOut,
    MeteredRun,
    Outcome,
    RefundOut,
    RunUsageOut,
    TransactionSum,
    UsageOut,
    UsageQuery,
    UsageReportOut,
    cpu_ms_of,
    customer_account,
    developer_account,
    meter,
    payouts_account,
    period_of,
    refund_split,
    usd,
)
from shared.catalog import CatalogService
from shared.identity import Principal
from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.money import PricingSpec, usd_to_micros

_Q = Queries("shared.billing")

_PUBLISHERS_CACHE_SIZE = 10_000


class LedgerImbalance(ValueError):
    """A transaction whose entries do not sum to zero (the database refuses it too)."""


class FrozenHook(Protocol):
    """What follows a freeze (the runs context cancels the org's queued and running runs)."""

    def __call__(self, org_id: str, actor: str) -> object:
        """The org ``org_id`` was frozen by ``actor``."""
        ...


class BillingEvents(Protocol):
    """Where billing events are announced (webhooks), inside the transaction that records them."""

    def __call__(self, tx: Tx, *, org_id: str, event: str, data: dict[str, Any]) -> object:
        """Record ``event`` for ``org_id``; it commits or rolls back with the change it reports."""
        ...


class BillingNotifier(Protocol):
    """Who tells the org's people about a billing event (the notifications context, which sits
    above billing: the composition root hands it over with ``BillingService.use_notifier``)."""

    def __call__(self, tx: Tx, *, org_id: str, event: str, data: dict[str, Any]) -> object:
        """Notify ``event`` in ``tx``: the notifications exist exactly when the event commits."""
        ...


class BillingService:
    """Metering, the ledger and spend limits (budgets, per-run caps, the kill switch)."""

    def __init__(self, db: Database, audit: AuditLog, catalog: CatalogService, *,
                 events: BillingEvents | None = None) -> None:
        self.db = db
        self.audit = audit
        self.catalog = catalog
        self.events = events
        self.notifier: BillingNotifier | None = None
        self.on_frozen: FrozenHook | None = None
        self._publishers: dict[str, str] = {}
        self._publishers_lock = threading.Lock()

    def use_on_frozen(self, hook: FrozenHook) -> None:
        """What a freeze sets off once it has committed (the root passes the runs' cancel-all)."""
        self.on_frozen = hook

    def use_notifier(self, notifier: BillingNotifier) -> None:
        """Budget alerts are also notified to the org's admins (in-app, email, Slack)."""
        self.notifier = notifier

    def publisher_of(self, tx: Tx, agent_id: str) -> str:
        """The developer org of a listing; a listing's publisher never changes, so it is cached."""
        with self._publishers_lock:
            found = self._publishers.get(agent_id)
        if found is None:
            found = self.catalog.publisher_org_of(tx, agent_id)
            if found is None:
                raise NotFound("the run's agent has no listing")
            with self._publishers_lock:
                if len(self._publishers) >= _PUBLISHERS_CACHE_SIZE:
                    self._publishers.clear()
                self._publishers[agent_id] = found
        return found

    # -- charging runs ----------------------------------------------------------------------------
    def charge_run(self, tx: Tx, *, run_id: str, org_id: str, agent_id: str, version: str,
                   pricing: PricingSpec, outcome: Outcome, records: int, cpu_seconds: float,
                   actor: str, cap_micros: int | None = None, at: datetime | None = None) -> Charge:
        """Meter run ``run_id``'s outcome and post its charge in ``tx``, exactly once per run, and
        end what the run held against the budget (``release``: the run has ended).

        One statement held back until the commit (``charge_run`` in queries.sql): a second call
        for the same run (a retried completion) inserts no usage row and so posts nothing. The
        charge is audited in the org's chain in the same transaction.
        """
        charge = meter(pricing, outcome, records=records, cpu_ms=cpu_ms_of(cpu_seconds))
        developer_org = self.publisher_of(tx, agent_id)
        moment = at or datetime.now(UTC)
        metered = charge.total_micros
        # The run's reservation (its cap) limits the charge in the statement itself: no read first.
        tx.defer(_Q.charge_run, metered, run_id, metered if cap_micros is None else min(metered, cap_micros),
                 run_id, org_id, agent_id, version, developer_org, charge.outcome.value, charge.records,
                 charge.cpu_ms, charge.base_micros, charge.records_micros, charge.cpu_micros, metered,
                 period_of(moment), run_id, new_id("ltx"))
        self.audit.append(tx, org_id=org_id, actor=actor, action="billing.run_charged", target=run_id, details={
            "agent_id": agent_id, "outcome": charge.outcome.value, "records": charge.records,
            "cpu_ms": charge.cpu_ms, "metered_micros": metered,
            "note": "charged at most the run's maximum charge (billing_usage holds what was charged)"})
        return charge

    # -- the ledger -------------------------------------------------------------------------------
    @staticmethod
    def post(tx: Tx, *, kind: str, org_id: str, entries: Sequence[tuple[str, int]], run_id: str | None = None,
             memo: dict[str, Any] | None = None) -> str | None:
        """Post a balanced transaction of ``entries`` (account, amount); returns its id, or None when
        a transaction of this ``kind`` for ``run_id`` exists already (posted once per run)."""
        amounts = [amount for _, amount in entries if amount != 0]
        if len(amounts) < 2 or sum(amounts) != 0:  # a transfer has two sides at least
            raise LedgerImbalance(f"a {kind} transaction must have entries that sum to zero")
        transaction_id = tx.fetch_val(_Q.insert_transaction, new_id("ltx"), kind, org_id, run_id,
                                      json.dumps(memo or {}))
        if transaction_id is None:
            return None
        kept = [(account, amount) for account, amount in entries if amount != 0]
        tx.execute(_Q.insert_entries, transaction_id, [a for a, _ in kept], [m for _, m in kept])
        return str(transaction_id)

    def refund(self, run_id: str, *, amount_micros: int | None, actor: str, reason: str) -> RefundOut | None:
        """Give back ``amount_micros`` of run ``run_id``'s charge (None: all that is left of it).

        A new ledger transaction reverses that part of the charge, split in proportion
        (``refund_split``): the org owes that much less, the developer's share comes back from the
        developer's balance (which may go negative after a payout: later earnings repay it), the
        rest from the platform's fee. The run's usage row is locked while the refund is decided, so
        refunds of one run together never pass its charge (and the database refuses one that
        would). Audited, announced (``billing.run_refunded``), and the month of the charge gets
        the amount back in the org's budget. Returns None when ``amount_micros`` is None and
        nothing is left to refund.
        """
        with self.db.transaction() as tx:
            usage = tx.fetch_one(_Q.usage_for_refund, run_id)
            if usage is None:
                raise NotFound("run not charged")
            before = tx.fetch_one(_Q.refunded_of_run, run_id)
            assert before is not None
            charge, refunded = int(usage["charge_micros"]), int(before["amount_micros"])
            left = charge - refunded
            if amount_micros is None and left == 0:
                return None
            amount = left if amount_micros is None else amount_micros
            if amount <= 0 or amount > left:
                raise Conflict(f"the refund of {usd(amount)} USD passes the {usd(left)} USD left of the run's "
                               f"{usd(charge)} USD charge", code=ErrorCode.REFUND_EXCEEDS_CHARGE)
            developer, platform = refund_split(charge, int(usage["developer_micros"]), refunded, amount,
                                               int(before["developer_micros"]))
            org_id, developer_org = usage["org_id"], usage["developer_org_id"]
            refund_id = new_id("rfd")
            transaction_id = self.post(tx, kind="run_refund", org_id=org_id,
                                       entries=[(customer_account(org_id), -amount),
                                                (developer_account(developer_org), developer),
                                                (PLATFORM_ACCOUNT, platform)],
                                       memo={"run_id": run_id, "refund_id": refund_id,
                                             "developer_org_id": developer_org})
            assert transaction_id is not None  # refunds carry no run id: never a duplicate
            row = tx.fetch_one(_Q.insert_refund, refund_id, run_id, org_id, developer_org, amount, developer,
                               platform, transaction_id, reason, actor, period_of(datetime.now(UTC)),
                               usage["period"])
            assert row is not None
            data = {"run_id": run_id, "refund_id": refund_id, "amount_usd": usd(amount),
                    "refunded_usd": usd(refunded + amount), "charge_usd": usd(charge), "reason": reason}
            self.audit.append(tx, org_id=org_id, actor=actor, action="billing.run_refunded", target=run_id,
                              details={**data, "transaction_id": transaction_id, "developer_micros": developer,
                                       "platform_micros": platform})
            if self.events is not None:
                self.events(tx, org_id=org_id, event="billing.run_refunded", data=data)
        return RefundOut(**row, amount_usd=usd(amount), charge_micros=charge, refunded_micros=refunded + amount)

    def refund_run(self, run_id: str, *, actor: str, reason: str = "refunded in full") -> str | None:
        """Refund all that is left of a run's charge; the refund's ledger transaction id, or None
        when the run was charged nothing or is refunded in full already."""
        refund = self.refund(run_id, amount_micros=None, actor=actor, reason=reason)
        return None if refund is None else refund.transaction_id

    def record_payout(self, tx: Tx, developer_org_id: str, amount_micros: int, *, transfer_id: str) -> str:
        """Post a payout of ``amount_micros`` to a developer (their balance owed goes down)."""
        posted = self.post(tx, kind="payout", org_id=developer_org_id,
                           entries=[(developer_account(developer_org_id), amount_micros),
                                    (payouts_account(developer_org_id), -amount_micros)],
                           memo={"transfer_id": transfer_id})
        assert posted is not None
        return posted

    def balance(self, account: str) -> int:
        """The sum of ``account``'s entries, in micro-dollars."""
        with self.db.read() as tx:
            return int(tx.fetch_val(_Q.account_balance, account))

    def customer_balance(self, org_id: str) -> int:
        """What ``org_id`` owes for its usage (charges less refunds less payments)."""
        return self.balance(customer_account(org_id))

    def developer_balance(self, org_id: str) -> int:
        """What the platform owes developer org ``org_id`` (earnings less refunds less payouts)."""
        return -self.balance(developer_account(org_id))

    def platform_balance(self) -> int:
        """The platform's fees collected (less refunds)."""
        return -self.balance(PLATFORM_ACCOUNT)

    def transaction_sums(self, org_ids: Sequence[str]) -> list[TransactionSum]:
        """Each ledger transaction of ``org_ids`` with the sum and count of its entries."""
        with self.db.read() as tx:
            return [TransactionSum(**row) for row in tx.fetch_all(_Q.transaction_sums, list(org_ids))]

    def run_usage(self, run_id: str) -> MeteredRun | None:
        """A run's metering and charge, or None when it was not metered."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.usage_of_run, run_id)
        return None if row is None else MeteredRun(**row)

    # -- spend limits ---------------------------------------------------------------------------
    def limits(self, org_id: str) -> BillingLimitsOut:
        """An org's budget, default cap, freeze, and this month's spend."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.settings, org_id)
            spend = tx.fetch_one(_Q.period_spend, org_id, period_of(datetime.now(UTC)))
        return _limits(org_id, row, spend)

    def set_limits(self, principal: Principal, org_id: str, body: BillingLimitsIn) -> BillingLimitsOut:
        """Set the monthly budget and the default per-run cap (None: none); audited."""
        budget = None if body.monthly_budget_usd is None else usd_to_micros(body.monthly_budget_usd)
        cap = None if body.default_run_cap_usd is None else usd_to_micros(body.default_run_cap_usd)
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.put_settings, org_id, budget, cap)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="billing.limits_set", target=org_id,
                              details={"monthly_budget_micros": budget, "default_run_cap_micros": cap})
            spend = tx.fetch_one(_Q.period_spend, org_id, period_of(datetime.now(UTC)))
        return _limits(org_id, row, spend)

    def set_frozen(self, principal: Principal | None, org_id: str, *, frozen: bool, reason: str,
                   actor: str | None = None) -> BillingLimitsOut:
        """Freeze (the kill switch) or unfreeze an org's spend; audited, and announced when frozen.

        Frozen, new runs are refused; ``freeze`` also stops the ones under way."""
        who = actor or (principal.actor if principal is not None else "system")
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.put_frozen, org_id, frozen, reason if frozen else None)
            self.audit.append(tx, org_id=org_id, actor=who, action="billing.frozen" if frozen else "billing.unfrozen",
                              target=org_id, details={"reason": reason})
            if frozen and self.events is not None:
                self.events(tx, org_id=org_id, event="billing.frozen", data={"org_id": org_id, "reason": reason})
            spend = tx.fetch_one(_Q.period_spend, org_id, period_of(datetime.now(UTC)))
        return _limits(org_id, row, spend)

    def freeze(self, principal: Principal, org_id: str, *, reason: str) -> BillingLimitsOut:
        """The kill switch: frozen first (no new run starts), then every queued, running or waiting
        run of the org is cancelled (``FrozenHook``), on the admin's behalf."""
        limits = self.set_frozen(principal, org_id, frozen=True, reason=reason)
        if self.on_frozen is not None:
            self.on_frozen(org_id, principal.actor)
        return limits

    def reserve(self, tx: Tx, *, org_id: str, run_id: str, max_charge_micros: int | None) -> int | None:
        """At a run's creation, in its transaction: refuse it when the org is frozen or its maximum
        charge does not fit the month's budget, else hold that maximum until the run ends.

        The org's settings row is locked (``FOR UPDATE``) until the transaction commits, so runs
        of one org are admitted one after another and together never pass the budget. Returns
        the run's cap (None: uncapped, only when the org has no budget and no default cap).
        """
        if max_charge_micros is not None and max_charge_micros <= 0:
            raise Unprocessable("the run's maximum charge must be more than 0",
                                details=[{"path": "max_charge_usd", "message": "must be more than 0"}])
        settings = tx.fetch_one(_Q.settings_for_update, org_id)
        if settings is None:
            if max_charge_micros is not None:
                tx.defer(_Q.hold_cap, run_id, org_id, period_of(datetime.now(UTC)), max_charge_micros)
            return max_charge_micros
        if settings["frozen"]:
            raise Conflict("the org's spend is frozen: no run may start", code=ErrorCode.SPEND_FROZEN)
        cap = max_charge_micros if max_charge_micros is not None else settings["default_run_cap_micros"]
        budget = settings["monthly_budget_micros"]
        period = period_of(datetime.now(UTC))
        if budget is None:
            if cap is not None:
                tx.defer(_Q.hold_cap, run_id, org_id, period, cap)
            return cap
        spend = tx.fetch_one(_Q.period_for_update, org_id, period)
        assert spend is not None
        left = budget - spend["charged_micros"] - spend["reserved_micros"]
        if cap is None:
            cap = left  # no cap anywhere: the run may use what is left, and holds all of it
        if cap <= 0 or cap > left:
            raise Conflict(f"the run's maximum charge of {usd(cap)} USD does not fit the "
                           f"{usd(max(left, 0))} USD left of this month's budget", code=ErrorCode.BUDGET_EXCEEDED)
        tx.defer(_Q.reserve, run_id, org_id, period, cap)
        self._alert(tx, org_id, period, budget=budget,
                    committed=spend["charged_micros"] + spend["reserved_micros"] + cap,
                    alerted=spend["alerted_percent"])
        return cap

    def _alert(self, tx: Tx, org_id: str, period: date, *, budget: int, committed: int, alerted: int) -> None:
        """Announce the highest budget threshold (50/80/100 %) newly reached by ``committed``."""
        if budget <= 0:
            return
        reached = [p for p in ALERT_PERCENTS if committed * 100 >= budget * p and p > alerted]
        if not reached:
            return
        percent = max(reached)
        tx.defer(_Q.set_alerted, percent, org_id, period, percent)
        data = {"org_id": org_id, "period": period.isoformat(), "percent": percent, "budget_usd": usd(budget),
                "committed_usd": usd(committed)}
        self.audit.append(tx, org_id=org_id, actor="system", action="billing.budget_threshold", target=org_id,
                          details=data)
        if self.events is not None:
            self.events(tx, org_id=org_id, event="billing.budget_threshold", data=data)
        if self.notifier is not None:
            self.notifier(tx, org_id=org_id, event="billing.budget_threshold", data=data)

    @staticmethod
    def release(tx: Tx, run_id: str) -> None:
        """A run has ended: what it held against the budget is released (with the end's commit)."""
        tx.defer(_Q.release, run_id)

    def report_usage(self, tx: Tx, *, run_id: str, pricing: PricingSpec, records: int, cpu_seconds: float
                     ) -> UsageReportOut:
        """A running run's usage so far (a heartbeat of the runner): whether it must stop now
        because what it would be charged reached its cap (and so, with a budget, its share of it)."""
        so_far = meter(pricing, Outcome.SUCCEEDED, records=records, cpu_ms=cpu_ms_of(cpu_seconds)).total_micros
        row = tx.fetch_one(_Q.report_usage, so_far, run_id)
        if row is None:
            return UsageReportOut(charge_so_far_usd=usd(so_far), cap_usd=None, stop=False)
        return UsageReportOut(charge_so_far_usd=usd(so_far), cap_usd=usd(row["cap_micros"]),
                              stop=so_far >= row["cap_micros"])

    # -- usage ----------------------------------------------------------------------------------
    def usage(self, org_id: str, query: UsageQuery) -> UsageOut:
        """An org's usage in a month: totals, per agent, per day, and each run with its charge."""
        start = query.start_date()
        end = (start + timedelta(days=32)).replace(day=1)
        low, high = datetime.combine(start, time(), UTC), datetime.combine(end, time(), UTC)
        with self.db.read() as tx:
            runs = tx.fetch_all(_Q.usage_runs, org_id, low, high, query.limit)
            agents = tx.fetch_all(_Q.usage_by_agent, org_id, low, high)
            days = tx.fetch_all(_Q.usage_by_day, org_id, low, high)
            settings = tx.fetch_one(_Q.settings, org_id)
            spend = tx.fetch_one(_Q.period_spend, org_id, start)
            refunds = {r["run_id"]: int(r["refunded_micros"]) for r in tx.fetch_all(_Q.refunds_in, org_id, low, high)}
        total = sum(a["charge_micros"] for a in agents)
        refunded = sum(refunds.values())
        budget = settings["monthly_budget_micros"] if settings else None
        return UsageOut(
            org_id=org_id, period_start=start, period_end=end, runs=sum(a["runs"] for a in agents),
            records=sum(a["records"] for a in agents), cpu_seconds=sum(a["cpu_ms"] for a in agents) / 1000,
            total_usd=usd(total), total_micros=total, refunded_usd=usd(refunded), refunded_micros=refunded,
            budget_usd=None if budget is None else usd(budget),
            reserved_usd=usd(spend["reserved_micros"] if spend else 0),
            by_agent=[AgentUsageOut(agent_id=a["agent_id"], runs=a["runs"], records=a["records"],
                                    cpu_seconds=a["cpu_ms"] / 1000, charge_usd=usd(a["charge_micros"]),
                                    charge_micros=a["charge_micros"]) for a in agents],
            by_day=[DayUsageOut(day=d["day"], runs=d["runs"], charge_usd=usd(d["charge_micros"]),
                                charge_micros=d["charge_micros"]) for d in days],
            items=[RunUsageOut(run_id=r["run_id"], agent_id=r["agent_id"], version=r["version"],
                               outcome=r["outcome"], records=r["records"], cpu_seconds=r["cpu_ms"] / 1000,
                               charge_usd=usd(r["charge_micros"]), charge_micros=r["charge_micros"],
                               capped=r["capped"], charged_at=r["charged_at"],
                               refunded_usd=usd(refunds.get(r["run_id"], 0)),
                               refunded_micros=refunds.get(r["run_id"], 0)) for r in runs],
            items_truncated=len(runs) == query.limit)


def _limits(org_id: str, row: dict[str, Any] | None, spend: dict[str, Any] | None) -> BillingLimitsOut:
    budget = row["monthly_budget_micros"] if row else None
    cap = row["default_run_cap_micros"] if row else None
    return BillingLimitsOut(
        org_id=org_id, monthly_budget_usd=None if budget is None else usd(budget),
        default_run_cap_usd=None if cap is None else usd(cap), frozen=bool(row and row["frozen"]),
        frozen_reason=row["frozen_reason"] if row else None,
        charged_this_month_usd=usd(spend["charged_micros"] if spend else 0),
        reserved_usd=usd(spend["reserved_micros"] if spend else 0))
