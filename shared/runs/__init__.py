"""The runs context's public API: other contexts, operations and the data plane import from here only."""

from shared.runs.dispatch import Delivery, DispatchReason, DispatchService
from shared.runs.models import (
    CheckpointIn,
    CheckpointList,
    CheckpointOut,
    CheckpointQuery,
    CheckpointWritesIn,
    CompleteIn,
    CompletionOut,
    HeartbeatIn,
    HeartbeatOut,
    LogBatchIn,
    LogBatchOut,
    LogLineOut,
    LogPage,
    LogQuery,
    RemediationEntry,  # for approvals
    RunCreate,
    RunCreated,
    RunEvent,  # for webhooks, approvals and notifications (through the root)
    RunEventType,
    RunListQuery,
    RunMemoryScope,  # for memory
    RunOut,
    RunStatus,
    RunSummary,
    TaskOut,
    TaskQuery,
)
from shared.runs.report_page import REPORT_CSP, render_report_page
from shared.runs.service import TASK_KIND, RunEvents, RunService, input_problems
from shared.runs.task_queue import TaskQueue

__all__ = [
    "REPORT_CSP",
    "TASK_KIND",
    "CheckpointIn",
    "CheckpointList",
    "CheckpointOut",
    "CheckpointQuery",
    "CheckpointWritesIn",
    "CompleteIn",
    "CompletionOut",
    "Delivery",
    "DispatchReason",
    "DispatchService",
    "HeartbeatIn",
    "HeartbeatOut",
    "LogBatchIn",
    "LogBatchOut",
    "LogLineOut",
    "LogPage",
    "LogQuery",
    "RemediationEntry",
    "RunCreate",
    "RunCreated",
    "RunEvent",
    "RunEventType",
    "RunEvents",
    "RunListQuery",
    "RunMemoryScope",
    "RunOut",
    "RunService",
    "RunStatus",
    "RunSummary",
    "TaskOut",
    "TaskQuery",
    "TaskQueue",
    "input_problems",  # for the agent developer kit (marketplace agent validate)
    "render_report_page",
]
