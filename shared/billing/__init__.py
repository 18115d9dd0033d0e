"""The billing context's public API: metering, the ledger, spend limits (docs/BILLING.md)."""

from shared.billing.models import (
    DEVELOPER_SHARE_PERCENT,
    Charge,
    Outcome,
    UsageOut,
    customer_account,
    developer_account,
    meter,
    split,
)
from shared.billing.service import BillingService, LedgerImbalance

__all__ = [
    "DEVELOPER_SHARE_PERCENT",
    "BillingService",
    "Charge",
    "LedgerImbalance",
    "Outcome",
    "UsageOut",
    "customer_account",
    "developer_account",
    "meter",
    "split",
]
