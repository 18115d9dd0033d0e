"""The approvals context's public API: human decisions on gated actions, bound to the exact action."""

from shared.approvals.canonical import action_hash, canonical_action
from shared.approvals.models import (
    ApprovalListQuery,
    ApprovalOut,
    ApprovalStatus,
    AwaitApprovalIn,
    AwaitApprovalOut,
    DecisionIn,
    ExecutionClaimIn,
    ExecutionClaimOut,
    ExecutionResultIn,
    PolicyIn,
    PolicyOut,
    ProposedAction,
    TaskDecision,
    TaskDecisions,
)
from shared.approvals.service import ApprovalNotifier, ApprovalService

__all__ = [
    "ApprovalListQuery",
    "ApprovalNotifier",
    "ApprovalOut",
    "ApprovalService",
    "ApprovalStatus",
    "AwaitApprovalIn",
    "AwaitApprovalOut",
    "DecisionIn",
    "ExecutionClaimIn",
    "ExecutionClaimOut",
    "ExecutionResultIn",
    "PolicyIn",
    "PolicyOut",
    "ProposedAction",
    "TaskDecision",
    "TaskDecisions",
    "action_hash",
    "canonical_action",
]
