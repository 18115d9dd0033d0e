"""Approvals: list and read the org's gated actions, approve or reject them, the org's policy; and
the data plane's side (a run parks at gated calls, reads decisions, claims an approved execution)."""

from __future__ import annotations

from functions.operation import ADMIN, ANY_MEMBER, Call, operation
from functions.tasks import LEASE_HEADERS, lease_token
from shared.approvals import (
    ApprovalListQuery,
    ApprovalOut,
    AwaitApprovalIn,
    AwaitApprovalOut,
    DecisionIn,
    ExecutionClaimIn,
    ExecutionClaimOut,
    ExecutionResultIn,
    FocusImportIn,
    PolicyIn,
    PolicyOut,
    ResourceOut,
    ResourceQuery,
    TaskDecisions,
)
from shared.identity import APPROVERS
from shared.kernel.errors import ErrorCode
from shared.kernel.pagination import Page

_DECIDE_ERRORS: dict[int, ErrorCode | tuple[ErrorCode, ...]] = {
    409: (ErrorCode.APPROVAL_DECIDED, ErrorCode.ALREADY_VOTED), 403: ErrorCode.STARTER_MAY_NOT_DECIDE}


@operation("GET", "/orgs/{org_id}/approvals", summary="List approvals", tags=["approvals"], roles=ANY_MEMBER,
           query=ApprovalListQuery, response=Page[ApprovalOut])
def list_approvals(call: Call) -> Page[ApprovalOut]:
    return call.services.approvals.page(call.org_id, call.query)


@operation("GET", "/orgs/{org_id}/approvals/{approval_id}", summary="Read an approval", tags=["approvals"],
           roles=ANY_MEMBER, response=ApprovalOut)
def get_approval(call: Call) -> ApprovalOut:
    return call.services.approvals.get(call.org_id, call.params["approval_id"])


@operation("POST", "/orgs/{org_id}/approvals/{approval_id}/approve", summary="Approve an action",
           tags=["approvals"], roles=APPROVERS, body=DecisionIn, response=ApprovalOut, errors=_DECIDE_ERRORS)
def approve_action(call: Call) -> ApprovalOut:
    body: DecisionIn = call.body
    return call.services.approvals.decide(call.caller, call.org_id, call.params["approval_id"], "approve",
                                          body.comment)


@operation("POST", "/orgs/{org_id}/approvals/{approval_id}/reject", summary="Reject an action",
           tags=["approvals"], roles=APPROVERS, body=DecisionIn, response=ApprovalOut, errors=_DECIDE_ERRORS)
def reject_action(call: Call) -> ApprovalOut:
    body: DecisionIn = call.body
    return call.services.approvals.decide(call.caller, call.org_id, call.params["approval_id"], "reject",
                                          body.comment)


@operation("GET", "/orgs/{org_id}/approval-policy", summary="Read the approval policy", tags=["approvals"],
           roles=ANY_MEMBER, response=PolicyOut)
def get_approval_policy(call: Call) -> PolicyOut:
    return call.services.approvals.policy(call.org_id)


@operation("PUT", "/orgs/{org_id}/approval-policy", summary="Change the approval policy", tags=["approvals"],
           roles=ADMIN, body=PolicyIn, response=PolicyOut)
def put_approval_policy(call: Call) -> PolicyOut:
    return call.services.approvals.put_policy(call.caller, call.org_id, call.body)


# -- data plane ------------------------------------------------------------------------------------
@operation("POST", "/agents/{agent_id}/runs/{run_id}/await-approval", summary="Park a run at gated calls",
           tags=["data plane"], dataplane=True, body=AwaitApprovalIn, response=AwaitApprovalOut,
           idempotent=False, errors={409: (ErrorCode.LEASE_LOST, ErrorCode.RUN_FINISHED)})
def await_approval(call: Call) -> AwaitApprovalOut:
    return call.services.approvals.request(call.caller, call.params["agent_id"], call.params["run_id"], call.body)


@operation("GET", "/tasks/{task_id}/approvals", summary="Decisions of the task's run", tags=["data plane"],
           dataplane=True, response=TaskDecisions, headers=LEASE_HEADERS,
           errors={400: ErrorCode.LEASE_TOKEN_REQUIRED, 409: ErrorCode.LEASE_LOST})
def task_approvals(call: Call) -> TaskDecisions:
    return call.services.approvals.task_decisions(call.caller, call.params["task_id"], lease_token(call))


@operation("POST", "/tasks/{task_id}/approvals/{approval_id}/execution", summary="Claim an approved execution",
           tags=["data plane"], dataplane=True, body=ExecutionClaimIn, response=ExecutionClaimOut,
           idempotent=False,
           errors={409: (ErrorCode.LEASE_LOST, ErrorCode.NOT_APPROVED, ErrorCode.STALE_APPROVAL),
            503: ErrorCode.UNAVAILABLE})
def claim_execution(call: Call) -> ExecutionClaimOut:
    body: ExecutionClaimIn = call.body
    return call.services.approvals.claim_execution(call.caller, call.params["task_id"], call.params["approval_id"],
                                                   body.lease_token, body.action_hash)


@operation("POST", "/tasks/{task_id}/approvals/{approval_id}/outcome", summary="Record an executed action",
           tags=["data plane"], dataplane=True, body=ExecutionResultIn, response=ExecutionClaimOut,
           idempotent=False, errors={409: (ErrorCode.LEASE_LOST, ErrorCode.NOT_APPROVED)})
def record_execution(call: Call) -> ExecutionClaimOut:
    body: ExecutionResultIn = call.body
    return call.services.approvals.record_execution(call.caller, call.params["task_id"], call.params["approval_id"],
                                                    body.lease_token, outcome=body.outcome,
                                                    saving_micros=body.monthly_saving_micros)


# -- the local cloud-resource inventory --------------------------------------------------------------
@operation("GET", "/orgs/{org_id}/cloud-resources", summary="List the org's cloud resources (local inventory)",
           tags=["approvals"], roles=ANY_MEMBER, query=ResourceQuery, response=Page[ResourceOut])
def list_cloud_resources(call: Call) -> Page[ResourceOut]:
    q: ResourceQuery = call.query
    return call.services.approvals.inventory.page(call.org_id, limit=q.limit, cursor=q.cursor)


@operation("POST", "/orgs/{org_id}/cloud-resources/import", summary="Seed the inventory from FOCUS data",
           tags=["approvals"], roles=ADMIN, body=FocusImportIn, response=Page[ResourceOut], max_body=10 * 1024 * 1024)
def import_cloud_resources(call: Call) -> Page[ResourceOut]:
    body: FocusImportIn = call.body
    return call.services.approvals.inventory.import_focus(call.caller, call.org_id, body.focus_csv)
