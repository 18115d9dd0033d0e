"""The billing context's public API: metering, the ledger, spend limits (docs/BILLING.md)."""

from shared.billing.invoices import Invoicing
from shared.billing.models import (
    DEVELOPER_SHARE_PERCENT,
    BillingLimitsIn,
    BillingLimitsOut,
    Charge,
    FreezeIn,
    InvoiceList,
    InvoiceOut,
    Outcome,
    UsageOut,
    UsageQuery,
    UsageReportIn,
    UsageReportOut,
    WebhookReceipt,
    customer_account,
    developer_account,
    meter,
    split,
)
from shared.billing.ports import PaymentProvider
from shared.billing.service import BillingEvents, BillingService, LedgerImbalance

__all__ = [
    "DEVELOPER_SHARE_PERCENT",
    "BillingEvents",
    "BillingLimitsIn",
    "BillingLimitsOut",
    "BillingService",
    "Charge",
    "FreezeIn",
    "InvoiceList",
    "InvoiceOut",
    "Invoicing",
    "LedgerImbalance",
    "Outcome",
    "PaymentProvider",
    "UsageOut",
    "UsageQuery",
    "UsageReportIn",
    "UsageReportOut",
    "WebhookReceipt",
    "customer_account",
    "developer_account",
    "meter",
    "split",
]
