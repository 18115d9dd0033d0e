"""The approvals context's public API: human decisions on gated actions, bound to the exact action."""

from shared.approvals.canonical import action_hash, canonical_action
from shared.approvals.inventory import Inventory
from shared.approvals.models import (
    ApprovalListQuery,
    ApprovalNotice,
    ApprovalOut,
    ApprovalStatus,
    AwaitApprovalIn,
    AwaitApprovalOut,
    DecisionIn,
    ExecutionClaimIn,
    ExecutionClaimOut,
    ExecutionResultIn,
    FocusImportIn,
    PolicyIn,
    PolicyOut,
    ProposedAction,
    ResourceOut,
    ResourceQuery,
    TaskDecision,
    TaskDecisions,
)
from shared.approvals.ports import CloudResources, ResourceActionError, ResourceOutcome
from shared.approvals.service import PLATFORM_TOOLS, ApprovalNotifier, ApprovalService

__all__ = [
    "PLATFORM_TOOLS",
    "ApprovalListQuery",
    "ApprovalNotice",
    "ApprovalNotifier",
    "ApprovalOut",
    "ApprovalService",
    "ApprovalStatus",
    "AwaitApprovalIn",
    "AwaitApprovalOut",
    "CloudResources",
    "DecisionIn",
    "ExecutionClaimIn",
    "ExecutionClaimOut",
    "ExecutionResultIn",
    "FocusImportIn",
    "Inventory",
    "PolicyIn",
    "PolicyOut",
    "ProposedAction",
    "ResourceActionError",
    "ResourceOut",
    "ResourceOutcome",
    "ResourceQuery",
    "TaskDecision",
    "TaskDecisions",
    "action_hash",
    "canonical_action",
]
