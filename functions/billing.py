"""Billing for orgs: usage, spend limits and the kill switch; the runner's usage heartbeat."""

from __future__ import annotations

from functions.operation import ADMIN, ANY_MEMBER, Call, operation
from shared.billing import (
    BillingLimitsIn,
    BillingLimitsOut,
    BillingService,
    FreezeIn,
    UsageOut,
    UsageQuery,
    UsageReportIn,
    UsageReportOut,
)
from shared.kernel.errors import ErrorCode


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
    # Frozen first (no new run starts), then every queued and running run is cancelled.
    limits = _billing(call).set_frozen(call.caller, call.org_id, frozen=True, reason=body.reason)
    call.services.runs.cancel_active(call.caller, call.org_id)
    return limits


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
