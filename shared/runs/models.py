"""Agent runs: what users ask for and read, and what the data plane exchanges with the control plane."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.catalog import PackageOut
from shared.identity import StrictModel
from shared.kernel.money import Usd
from shared.kernel.redacted import ShownData, ShownResult, ShownText


class RunStatus(StrEnum):
    """A run's life cycle (docs/RUNS.md, docs/APPROVALS.md); succeeded, failed, cancelled, dead
    and remediated are final."""

    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"  # parked at gated calls, holding no lease (docs/APPROVALS.md)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"
    REMEDIATED = "remediated"  # succeeded after an approved action executed (docs/APPROVALS.md)

    @property
    def final(self) -> bool:
        """Whether the run can no longer change."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DEAD,
                            RunStatus.REMEDIATED})

Id = Annotated[str, StringConstraints(min_length=1, max_length=100)]
LeaseToken = Annotated[str, StringConstraints(min_length=1, max_length=200)]

# Limits of what a data plane may send in one request.
MAX_LOG_LINES = 500
MAX_LOG_MESSAGE = 8000
MAX_ERROR_CHARS = 8000


# -- users ---------------------------------------------------------------------------------------
class RunCreate(StrictModel):
    deployment_id: Id
    inputs: dict[str, Any] = Field(default_factory=dict)
    # billing (issue 16): the most this run may be charged; default: the org's default run cap.
    max_charge_usd: Usd | None = Field(default=None, description="The most this run may be charged (USD); "
                                       "default: the org's default run cap")


class RunOut(BaseModel):
    id: str
    org_id: str
    agent_id: str
    deployment_id: str
    version: str
    status: RunStatus
    inputs: ShownData = Field(description="The run's inputs as given, values under secret-named keys and "
                                          "credential shapes in text shown as [REDACTED].")
    outputs: ShownResult | None = None
    error: ShownText | None = None
    metrics: dict[str, Any] | None = None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    remediation: list[dict[str, Any]] | None = Field(
        default=None, description="What the run's approved actions did (outcome, monthly saving in "
                                  "micro-dollars) and any call refused as a stale approval.")


class RunCreated(RunOut):
    run_id: str = Field(description="The new run's id (the same as ``id``).")


class RunSummary(BaseModel):
    """A run in a list: everything but its inputs and outputs."""

    id: str
    agent_id: str
    deployment_id: str
    version: str
    status: RunStatus
    error: ShownText | None = None
    metrics: dict[str, Any] | None = None
    attempt: int
    cancel_requested: bool
    created_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)
    status: RunStatus | None = None
    agent_id: Id | None = None
    deployment_id: Id | None = None


class LogLineOut(BaseModel):
    seq: int
    ts: datetime
    level: str
    step: str
    message: str
    fields: dict[str, Any]
    attempt: int


class LogPage(BaseModel):
    items: list[LogLineOut]
    next_after_seq: int | None = Field(
        default=None, description="Pass as ``after_seq`` for the next page; null when this page is the last so far.")


class LogQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_seq: int = Field(default=0, ge=0, description="Only lines with a higher sequence number.")
    limit: int = Field(default=200, ge=1, le=1000)
    stream: bool = Field(default=False, description="Follow the run as Server-Sent Events (like "
                                                    "``Accept: text/event-stream``).")


# -- data plane ----------------------------------------------------------------------------------
class TaskQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float = Field(default=0, ge=0, le=30, description="Seconds to wait for a task (long poll).")
    lease_seconds: int = Field(default=60, ge=2, le=900, description="Lease length; renew it with heartbeats.")
    worker: Annotated[str, StringConstraints(max_length=200)] | None = None


class TaskOut(BaseModel):
    """A leased task: everything the data plane needs to execute the run."""

    task_id: str
    lease_token: str
    lease_expires_at: datetime
    lease_seconds: int
    run_id: str
    agent_id: str
    version: str
    inputs: dict[str, Any]
    config: dict[str, Any]
    granted_permissions: list[str]
    manifest: dict[str, Any]
    package: PackageOut | None = Field(default=None, description=(
        "The version's code package (issue 14): fetch it from GET /dataplane/packages/{sha256} and verify "
        "its SHA-256 before use; null when the version has none."))
    attempt: int
    max_attempts: int
    cancel_requested: bool
    next_log_seq: int = Field(description="The first log sequence number this delivery should use.")


class HeartbeatIn(StrictModel):
    lease_token: LeaseToken
    lease_seconds: int = Field(default=60, ge=2, le=900)


class HeartbeatOut(BaseModel):
    cancel_requested: bool
    lease_expires_at: datetime | None


class LogLineIn(StrictModel):
    seq: int = Field(ge=1)
    ts: datetime
    level: Literal["debug", "info", "warning", "error"] = "info"
    step: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    message: Annotated[str, StringConstraints(max_length=MAX_LOG_MESSAGE)]
    fields: dict[str, Any] = Field(default_factory=dict)


class LogBatchIn(StrictModel):
    lease_token: LeaseToken
    lines: list[LogLineIn] = Field(min_length=1, max_length=MAX_LOG_LINES)


class LogBatchOut(BaseModel):
    accepted: int
    duplicates: int


class RunMetricsIn(BaseModel):
    """What the data plane measured; ``records_processed`` and ``cpu_seconds`` are billed."""

    model_config = ConfigDict(extra="forbid")

    records_processed: int = Field(ge=0)
    cpu_seconds: float = Field(ge=0)
    duration_ms: int | None = Field(default=None, ge=0)
    steps: int | None = Field(default=None, ge=0)
    tool_calls: int | None = Field(default=None, ge=0)


class CompleteIn(StrictModel):
    task_id: Id
    lease_token: LeaseToken
    status: Literal["succeeded", "failed", "cancelled"]
    outputs: dict[str, Any] | None = None
    metrics: RunMetricsIn
    error: Annotated[str, StringConstraints(max_length=MAX_ERROR_CHARS)] | None = None
    retryable: bool = Field(default=False, description="A failure that another attempt may not repeat "
                                                        "(e.g. a network error): the task is retried "
                                                        "until its attempts run out, then the run is dead.")


class CompletionOut(BaseModel):
    """What a completion did; a retried completion of the same lease gets the same answer."""

    run_id: str
    status: RunStatus
    attempt: int
    retry_scheduled: bool


# -- checkpoints (LangGraph, opaque to the control plane) ----------------------------------------
class Blob(StrictModel):
    """A value serialised by the data plane: its serializer's type tag and base64 bytes."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    data: str = Field(description="base64")


class CheckpointIn(StrictModel):
    checkpoint_ns: Annotated[str, StringConstraints(max_length=500)] = ""
    parent_checkpoint_id: Annotated[str, StringConstraints(max_length=200)] | None = None
    checkpoint: Blob
    metadata: Blob
    progress: dict[str, float] = Field(default_factory=dict, description="The run's counters at this point.")


class CheckpointWriteIn(StrictModel):
    idx: int
    channel: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    value: Blob


class CheckpointWritesIn(StrictModel):
    checkpoint_ns: Annotated[str, StringConstraints(max_length=500)] = ""
    task_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    task_path: Annotated[str, StringConstraints(max_length=2000)] = ""
    writes: list[CheckpointWriteIn] = Field(max_length=10_000)


class CheckpointQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_ns: str = Field(default="", max_length=500)
    checkpoint_id: str | None = Field(default=None, max_length=200)
    before: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=10, ge=1, le=100)


class CheckpointWriteOut(BaseModel):
    task_id: str
    idx: int
    task_path: str
    channel: str
    value: Blob


class CheckpointOut(BaseModel):
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: Blob
    metadata: Blob
    progress: dict[str, float]
    writes: list[CheckpointWriteOut]


class CheckpointList(BaseModel):
    items: list[CheckpointOut]


# -- for memory --
class RunMemoryScope(BaseModel):
    """Whose memory a leased task's run may use (the memory context reads it)."""

    org_id: str
    run_id: str
    agent: str
    levels: list[int]
    namespaces: list[str]


class RunEventType(StrEnum):
    """What a run's final status is announced as (webhooks' event types, docs/WEBHOOKS.md)."""

    COMPLETED = "run.completed"
    FAILED = "run.failed"  # failed or dead
    CANCELLED = "run.cancelled"
    REMEDIATED = "run.remediated"

    @classmethod
    def of(cls, status: RunStatus) -> RunEventType:
        """The event a run that ended in ``status`` announces."""
        return {RunStatus.SUCCEEDED: cls.COMPLETED, RunStatus.CANCELLED: cls.CANCELLED,
                RunStatus.REMEDIATED: cls.REMEDIATED}.get(status, cls.FAILED)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A run's final outcome, announced (``RunEvents``) inside the transaction that records it."""

    type: RunEventType
    org_id: str
    run_id: str
    agent_id: str
    deployment_id: str
    version: str
    status: RunStatus
    error: str | None
    metrics: dict[str, Any] | None
    finished_at: datetime
    monthly_saving_micros: int = 0  # what the run's executed actions save a month (remediated)

    def payload(self) -> dict[str, Any]:
        """The event's data as webhooks deliver it (docs/WEBHOOKS.md)."""
        return {"run_id": self.run_id, "agent_id": self.agent_id, "deployment_id": self.deployment_id,
                "version": self.version, "status": self.status.value, "error": self.error, "metrics": self.metrics,
                "finished_at": self.finished_at.isoformat()}


@dataclass(frozen=True)
class RemediationEntry:
    """One line of a run's remediation: what an approved action did, or a call refused because it
    differed from the approved action (``stale_approval``)."""

    approval_id: str
    tool: str
    outcome: dict[str, Any] | None = None  # what the action did (executed)
    monthly_saving_micros: int | None = None  # (executed)
    stale_approval: bool = False
    approved_hash: str | None = None  # (stale) the action that was approved
    call_hash: str | None = None  # (stale) the call that was made instead

    def as_json(self) -> dict[str, Any]:
        """The entry as the run stores and shows it (the fields of its kind only)."""
        return {key: value for key, value in asdict(self).items() if value is not None and value is not False}
