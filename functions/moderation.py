"""Platform-admin moderation of agent listings: approve, reject, suspend."""

from __future__ import annotations

from functions.operation import Call, operation
from shared.catalog import AgentListing, ApproveBody, RejectBody, SuspendBody


@operation("POST", "/admin/agents/{agent_id}/approve", summary="Approve an agent version", tags=["admin"],
           platform_admin=True, body=ApproveBody, response=AgentListing)
def approve_agent(call: Call) -> AgentListing:
    return AgentListing(**call.services.catalog.approve(call.caller, call.params["agent_id"], call.body.version,
                                                        call.body.note))


@operation("POST", "/admin/agents/{agent_id}/reject", summary="Reject an agent version", tags=["admin"],
           platform_admin=True, body=RejectBody, response=AgentListing)
def reject_agent(call: Call) -> AgentListing:
    return AgentListing(**call.services.catalog.reject(call.caller, call.params["agent_id"], call.body.reason,
                                                       call.body.version))


@operation("POST", "/admin/agents/{agent_id}/suspend", summary="Suspend an agent listing", tags=["admin"],
           platform_admin=True, body=SuspendBody, response=AgentListing)
def suspend_agent(call: Call) -> AgentListing:
    return AgentListing(**call.services.catalog.suspend(call.caller, call.params["agent_id"], call.body.reason))
