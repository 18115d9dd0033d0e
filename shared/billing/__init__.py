"""The billing context's public API: metering, the ledger, spend limits (docs/BILLING.md)."""

from shared.billing.models import (
    DEVELOPER_SHARE_PERCENT,
    BillingLimitsIn,
    BillingLimitsOut,
    Charge,
    FreezeIn,
    Outcome,
    UsageOut,
    UsageQuery,
    UsageReportIn,
    UsageReportOut,
    customer_account,
    developer_account,
    meter,
    split,
)
from shared.billing.service import BillingEvents, BillingService, LedgerImbalance

__all__ = [
    "DEVELOPER_SHARE_PERCENT",
    "BillingEvents",
    "BillingLimitsIn",
    "BillingLimitsOut",
    "BillingService",
    "Charge",
    "FreezeIn",
    "LedgerImbalance",
    "Outcome",
    "UsageOut",
    "UsageQuery",
    "UsageReportIn",
    "UsageReportOut",
    "customer_account",
    "developer_account",
    "meter",
    "split",
]
