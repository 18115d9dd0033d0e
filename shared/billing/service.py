"""Billing's use cases: meter and charge runs exactly once, post balanced ledger transactions."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.audit import AuditLog
from shared.billing.models import (
    PLATFORM_ACCOUNT,
    Charge,
    Outcome,
    cpu_ms_of,
    customer_account,
    developer_account,
    meter,
    payouts_account,
    period_of,
)
from shared.catalog import CatalogService
from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import NotFound
from shared.kernel.ids import new_id
from shared.kernel.money import PricingSpec

_Q = Queries("shared.billing")

_PUBLISHERS_CACHE_SIZE = 10_000


class LedgerImbalance(ValueError):
    """A transaction whose entries do not sum to zero (the database refuses it too)."""


class BillingService:
    """Metering, the ledger and (with the other modules of this context) spend limits."""

    def __init__(self, db: Database, audit: AuditLog, catalog: CatalogService) -> None:
        self.db = db
        self.audit = audit
        self.catalog = catalog
        self._publishers: dict[str, str] = {}
        self._publishers_lock = threading.Lock()

    def _publisher(self, tx: Tx, agent_id: str) -> str:
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
        """Meter run ``run_id``'s outcome and post its charge in ``tx``, exactly once per run.

        One statement held back until the commit (``charge_run`` in queries.sql): a second call
        for the same run (a retried completion) inserts no usage row and so posts nothing. The
        charge is audited in the org's chain in the same transaction.
        """
        charge = meter(pricing, outcome, records=records, cpu_ms=cpu_ms_of(cpu_seconds),
                       cap_micros=cap_micros)
        developer_org = self._publisher(tx, agent_id)
        moment = at or datetime.now(UTC)
        tx.defer(_Q.charge_run, run_id, org_id, agent_id, version, developer_org, charge.outcome.value,
                 charge.records, charge.cpu_ms, charge.base_micros, charge.records_micros, charge.cpu_micros,
                 charge.capped, charge.total_micros, charge.developer_micros, charge.platform_micros,
                 period_of(moment), new_id("ltx"))
        self.audit.append(tx, org_id=org_id, actor=actor, action="billing.run_charged", target=run_id, details={
            "agent_id": agent_id, "outcome": charge.outcome.value, "records": charge.records,
            "cpu_ms": charge.cpu_ms, "charge_micros": charge.total_micros, "capped": charge.capped,
            "developer_micros": charge.developer_micros, "platform_micros": charge.platform_micros})
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

    def refund_run(self, run_id: str, *, actor: str) -> str | None:
        """Reverse a run's charge with a new transaction (the original stays); once per run.

        Returns the refund's transaction id, or None when the run was charged nothing or refunded
        already. The developer's share comes back even when it was paid out: the developer's
        balance may go negative, and later earnings repay it.
        """
        with self.db.transaction() as tx:
            rows = tx.fetch_all(_Q.run_transaction, "run_charge", run_id)
            if not rows:
                usage = tx.fetch_one(_Q.usage_of_run, run_id)
                if usage is None:
                    raise NotFound("run not charged")
                return None
            usage = tx.fetch_one(_Q.usage_of_run, run_id)
            assert usage is not None
            refund = self.post(tx, kind="run_refund", org_id=usage["org_id"], run_id=run_id,
                               entries=[(r["account"], -r["amount"]) for r in rows],
                               memo={"developer_org_id": usage["developer_org_id"]})
            if refund is not None:
                self.audit.append(tx, org_id=usage["org_id"], actor=actor, action="billing.run_refunded",
                                  target=run_id, details={"charge_micros": usage["charge_micros"],
                                                          "transaction_id": refund})
        return refund

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

    def transaction_sums(self, org_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Each ledger transaction of ``org_ids`` with the sum and count of its entries."""
        with self.db.read() as tx:
            return tx.fetch_all(_Q.transaction_sums, list(org_ids))

    def run_usage(self, run_id: str) -> dict[str, Any] | None:
        """A run's usage row, or None when it was not metered."""
        with self.db.read() as tx:
            return tx.fetch_one(_Q.usage_of_run, run_id)
