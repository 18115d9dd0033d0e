"""Billing for orgs: usage, spend limits and the kill switch; the runner's usage heartbeat."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from functions.operation import ADMIN, ANY_MEMBER, Call, operation
from shared.billing import (
    BillingLimitsIn,
    BillingLimitsOut,
    BillingService,
    EarningsOut,
    FreezeIn,
    InvoiceList,
    InvoiceOut,
    OnboardingIn,
    OnboardingOut,
    PayoutList,
    RefundIn,
    RefundOut,
    UsageOut,
    UsageQuery,
    UsageReportIn,
    UsageReportOut,
    WebhookReceipt,
)
from shared.kernel.errors import Conflict, ErrorCode
from shared.kernel.money import usd_to_micros


def _billing(call: Call) -> BillingService:
    return call.services.billing


@operation("GET", "/orgs/{org_id}/usage", summary="Read the org's usage and charges", tags=["billing"],
           roles=ANY_MEMBER, query=UsageQuery, response=UsageOut)
def get_usage(call: Call) -> UsageOut:
    return _billing(call).usage(call.org_id, call.query)


@operation("GET", "/orgs/{org_id}/billing/limits", summary="Read the org's spend limits", tags=["billing"],
           roles=ANY_MEMBER, response=BillingLimitsOut)
def get_limits(call: Call) -> BillingLimitsOut:
    return _billing(call).limits(call.org_id)


@operation("PUT", "/orgs/{org_id}/billing/limits", summary="Set the monthly budget and default run cap",
           tags=["billing"], roles=ADMIN, body=BillingLimitsIn, response=BillingLimitsOut)
def put_limits(call: Call) -> BillingLimitsOut:
    return _billing(call).set_limits(call.caller, call.org_id, call.body)


@operation("POST", "/orgs/{org_id}/billing/freeze", summary="Freeze all spend (the kill switch)", tags=["billing"],
           roles=ADMIN, body=FreezeIn, response=BillingLimitsOut)
def freeze(call: Call) -> BillingLimitsOut:
    body: FreezeIn = call.body
    return _billing(call).freeze(call.caller, call.org_id, reason=body.reason)


@operation("POST", "/orgs/{org_id}/billing/unfreeze", summary="Allow spend again", tags=["billing"],
           roles=ADMIN, response=BillingLimitsOut)
def unfreeze(call: Call) -> BillingLimitsOut:
    return _billing(call).set_frozen(call.caller, call.org_id, frozen=False,
                                     reason="unfrozen by an admin")


@operation("POST", "/agents/{agent_id}/runs/{run_id}/usage", summary="Report a running run's usage (heartbeat)",
           tags=["data plane"], dataplane=True, body=UsageReportIn, response=UsageReportOut, idempotent=False,
           errors={409: (ErrorCode.LEASE_LOST, ErrorCode.RUN_FINISHED)})
def report_usage(call: Call) -> UsageReportOut:
    return call.services.runs.report_usage(call.caller, call.params["agent_id"], call.params["run_id"], call.body)


@operation("GET", "/orgs/{org_id}/invoices", summary="List the org's invoices", tags=["billing"], roles=ADMIN,
           response=InvoiceList)
def list_invoices(call: Call) -> InvoiceList:
    return call.services.invoicing.invoices(call.org_id)


@operation("GET", "/orgs/{org_id}/invoices/{invoice_id}", summary="Read an invoice with its lines",
           tags=["billing"], roles=ADMIN, response=InvoiceOut)
def get_invoice(call: Call) -> InvoiceOut:
    return call.services.invoicing.invoice(call.org_id, call.params["invoice_id"])


class StripeEventIn(BaseModel):
    """A Stripe event (verified against the raw body and its Stripe-Signature header)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=255)


@operation("POST", "/billing/stripe/webhook", summary="Receive a Stripe event", tags=["billing"], auth=False,
           body=StripeEventIn, response=WebhookReceipt, idempotent=False, max_body=512 * 1024,
           headers={"Stripe-Signature": "Stripe's signature of the raw body (required)"},
           errors={400: ErrorCode.INVALID_SIGNATURE, 404: ErrorCode.NOT_FOUND})
def stripe_webhook(call: Call) -> WebhookReceipt:
    return call.services.invoicing.handle_webhook(call.raw_body,
                                                  call.request.headers.get("Stripe-Signature", ""))


@operation("GET", "/developers/{org_id}/earnings", summary="Read a developer org's earnings", tags=["billing"],
           roles=ADMIN, response=EarningsOut)
def get_earnings(call: Call) -> EarningsOut:
    return call.services.payouts.earnings(call.org_id)


@operation("GET", "/developers/{org_id}/payouts", summary="List a developer org's payouts", tags=["billing"],
           roles=ADMIN, response=PayoutList)
def list_payouts(call: Call) -> PayoutList:
    return call.services.payouts.payouts(call.org_id)


@operation("POST", "/developers/{org_id}/payouts/onboarding", summary="Start or resume Stripe Connect onboarding",
           tags=["billing"], roles=ADMIN, body=OnboardingIn, response=OnboardingOut,
           errors={409: ErrorCode.NO_PAYOUT_ACCOUNT})
def onboard_payouts(call: Call) -> OnboardingOut:
    return call.services.payouts.onboard(call.caller.actor, call.org_id, call.body)


@operation("POST", "/admin/runs/{run_id}/refund", summary="Refund a run's charge, in full or in part",
           tags=["admin"], platform_admin=True, body=RefundIn, response=RefundOut,
           errors={404: ErrorCode.NOT_FOUND, 409: ErrorCode.REFUND_EXCEEDS_CHARGE})
def refund_run(call: Call) -> RefundOut:
    # Platform admins only (docs/BILLING.md): a refund moves the developer's money too. A retry
    # with the same Idempotency-Key is answered from the first response, never refunded twice.
    body: RefundIn = call.body
    amount = None if body.amount_usd is None else usd_to_micros(body.amount_usd)
    refund = _billing(call).refund(call.params["run_id"], amount_micros=amount, actor=call.caller.actor,
                                   reason=body.reason)
    if refund is None:
        raise Conflict("the run's charge is refunded in full already (or it was charged nothing)",
                       code=ErrorCode.REFUND_EXCEEDS_CHARGE)
    return refund
