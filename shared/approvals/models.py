"""Approvals: the gated action, its decision, the org's policy, and what the data plane exchanges."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.identity import StrictModel
from shared.kernel.redacted import ShownData

Id = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Comment = Annotated[str, StringConstraints(max_length=2000)]

DEFAULT_EXPIRY_SECONDS = 72 * 3600
DEFAULT_REMINDER_SECONDS = 12 * 3600


class ApprovalStatus(StrEnum):
    """``pending`` until decided; ``expired`` is its own state, never a silent denial."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


Decision = Literal["approve", "reject"]


class Vote(BaseModel):
    approver: str
    decision: Decision
    comment: str | None = None
    created_at: datetime


class ApprovalOut(BaseModel):
    """A gated action waiting for (or past) a human decision."""

    id: str
    org_id: str
    run_id: str
    agent_id: str
    version: str
    package_digest: str
    tool: str
    arguments: ShownData
    action_hash: str = Field(description="SHA-256 of the action in RFC 8785 canonical JSON: the call "
                                         "executes only when its own hash is this one.")
    interrupt_id: str
    impact: dict[str, Any]
    monthly_saving_micros: int
    requested_by: str
    status: ApprovalStatus
    required_approvals: int
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_comment: str | None = None
    expires_at: datetime
    executed_at: datetime | None = None
    execution: dict[str, Any] | None = None
    votes: list[Vote] = Field(default_factory=list)
    created_at: datetime


class ApprovalListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)
    status: ApprovalStatus | None = None
    agent_id: Id | None = None
    run_id: Id | None = None


class DecisionIn(StrictModel):
    comment: Comment | None = None


class PolicyIn(StrictModel):
    """The org's approval policy; every field optional (the rest keep their values)."""

    expiry_seconds: int | None = Field(default=None, ge=60, le=30 * 86400)
    reminder_seconds: int | None = Field(default=None, ge=0, le=30 * 86400)
    required_approvals: int | None = Field(default=None, ge=1, le=10)
    starter_may_approve: bool | None = None


class PolicyOut(BaseModel):
    expiry_seconds: int = DEFAULT_EXPIRY_SECONDS
    reminder_seconds: int = Field(default=DEFAULT_REMINDER_SECONDS,
                                  description="A reminder goes out this long before the approval expires.")
    required_approvals: int = 1
    starter_may_approve: bool = False


# -- data plane ----------------------------------------------------------------------------------
class ProposedAction(StrictModel):
    """One gated tool call the run stopped at (a LangGraph interrupt)."""

    interrupt_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    tool: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    arguments: dict[str, Any]
    action_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    package_digest: Annotated[str, StringConstraints(max_length=200)] = ""
    impact: dict[str, Any] = Field(default_factory=dict)
    monthly_saving_micros: int = Field(default=0, ge=-(10**15), le=10**15)


class AwaitApprovalIn(StrictModel):
    """The data plane's report that a run stopped at gated calls: it parks and releases its lease."""

    task_id: Id
    lease_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    actions: Annotated[list[ProposedAction], Field(min_length=1, max_length=50)]


class AwaitApprovalOut(BaseModel):
    run_id: str
    status: str
    approvals: list[ApprovalOut]


class ExecutionClaimIn(StrictModel):
    """Before executing an approved call: the call's own hash, checked against the approved one."""

    lease_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    action_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ExecutionClaimOut(BaseModel):
    approval_id: str
    execute: bool = Field(description="True: execute the call now. False: it executed before; "
                                      "``execution`` is its recorded outcome.")
    execution: dict[str, Any] | None = None


class ExecutionResultIn(StrictModel):
    lease_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    outcome: dict[str, Any]
    monthly_saving_micros: int = Field(default=0, ge=-(10**15), le=10**15)


class TaskDecision(BaseModel):
    """A decided approval of the task's run, for resuming its interrupt."""

    approval_id: str
    interrupt_id: str
    status: ApprovalStatus
    action_hash: str
    tool: str


class TaskDecisions(BaseModel):
    items: list[TaskDecision]


# -- the local cloud-resource inventory --------------------------------------------------------------
class ResourceOut(BaseModel):
    resource_id: str
    name: str | None = None
    service: str | None = None
    region: str | None = None
    state: str
    machine_type: str | None = None
    monthly_cost_micros: int
    history: list[dict[str, Any]]
    updated_at: datetime


class ResourceQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=500)
    # Longer than other lists' 512: the cursor carries a resource id (up to 500 characters).
    cursor: str | None = Field(default=None, max_length=4096)


class FocusImportIn(StrictModel):
    focus_csv: Annotated[str, StringConstraints(min_length=1, max_length=8_000_000)] = Field(
        description="A FOCUS 1.0 billing export (CSV text): each ResourceId becomes an inventory resource.")


@dataclass(frozen=True, slots=True)
class ApprovalNotice:
    """What events, notifications and 409 bodies say of an approval (``as_json`` is their body);
    a run's remediation is announced with it too (no approval: ``approval_id`` None)."""

    approval_id: str | None
    run_id: str
    agent_id: str | None = None
    tool: str | None = None
    status: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None  # ISO 8601
    comment: str | None = None
    action_hash: str | None = None
    monthly_saving_micros: int | None = None
    impact: dict[str, Any] | None = None  # (approval.requested)
    expires_at: str | None = None  # ISO 8601 (approval.requested, approval.reminder)

    def as_json(self) -> dict[str, Any]:
        """Every field, but ``impact`` and ``expires_at`` only when the notice has them."""
        return {field.name: getattr(self, field.name) for field in fields(self)
                if field.name not in ("impact", "expires_at") or getattr(self, field.name) is not None}
