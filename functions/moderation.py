"""Platform-admin moderation of agent listings: approve, reject, suspend."""

from __future__ import annotations

from functions.operation import Call, operation
from shared.catalog import AgentListing, ApproveBody, CatalogService, RejectBody, SuspendBody
from shared.kernel.errors import ErrorCode


def _catalog(call: Call) -> CatalogService:
    catalog: CatalogService = call.services.catalog  # typed here while Call.services is not
    return catalog


@operation("POST", "/admin/agents/{agent_id}/approve", summary="Approve an agent version", tags=["admin"],
           platform_admin=True, body=ApproveBody, response=AgentListing,
           errors={409: (ErrorCode.NOTHING_PENDING, ErrorCode.NOT_PENDING)})
def approve_agent(call: Call) -> AgentListing:
    return _catalog(call).approve(call.caller, call.params["agent_id"], call.body.version, call.body.note)


@operation("POST", "/admin/agents/{agent_id}/reject", summary="Reject an agent version", tags=["admin"],
           platform_admin=True, body=RejectBody, response=AgentListing,
           errors={409: (ErrorCode.NOTHING_PENDING, ErrorCode.NOT_PENDING)})
def reject_agent(call: Call) -> AgentListing:
    return _catalog(call).reject(call.caller, call.params["agent_id"], call.body.reason, call.body.version)


@operation("POST", "/admin/agents/{agent_id}/suspend", summary="Suspend an agent listing", tags=["admin"],
           platform_admin=True, body=SuspendBody, response=AgentListing,
           errors={409: ErrorCode.ALREADY_SUSPENDED})
def suspend_agent(call: Call) -> AgentListing:
    return _catalog(call).suspend(call.caller, call.params["agent_id"], call.body.reason)
