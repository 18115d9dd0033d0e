"""Human approval of gated tool calls, on the data plane's trusted side (docs/APPROVALS.md).

A tool call is *gated* when the agent's manifest marks the tool ``requires_approval`` or carries the
constraint ``requires-human-approval-for-remediation`` and the tool is a remediation (it needs a
``*:write`` permission, or it is one of the platform's cloud-resource tools, ``cloud.*``). The
runner, not agent code, decides this and does the rest:

1. ``ApprovalGate.call`` builds the exact action — agent, version, package digest, tool, arguments,
   run and a deterministic interrupt id — in RFC 8785 canonical JSON with its SHA-256 (the same
   bytes ``shared.approvals.canonical_action`` builds on the control plane), and stops the graph
   with LangGraph's ``interrupt``. The executor sees the pending interrupt once the stream ends and
   the worker reports the actions (``park``): the run waits ``awaiting_approval`` holding no lease.
2. When the decisions are in, a new task resumes the run from its checkpoint: ``resume_command``
   answers each pending interrupt with its decision (``Command(resume={interrupt id: ...})``), and
   the node calls the tool again — LangGraph replays a node from its start, so the call is rebuilt
   from the agent's state, not taken from the decision.
3. An approved call executes only after the control plane agreed that *this* call's hash is the
   approved one (``claim_execution``); any difference is refused there (``stale_approval``,
   recorded on the run) and the call returns ``{"executed": false, "status": "stale_approval"}``.
   The control plane also answers a call executed before with its recorded outcome, so a resume
   redelivered after a crash never executes it twice. Platform tools (``cloud.*``) are applied by
   the control plane itself, with the approved arguments, through its cloud-resources port.
   A rejected, expired or cancelled call returns ``{"executed": false, "status": ...}``: the
   agent's "not approved" path.

The gate holds no decision of its own: whether a call may execute is answered by the control
plane at the moment it would execute. That keeps it correct when the graph runs in a child process
(issue 14): the child may raise the interrupt and replay the call, but the execution request goes
through the parent, which asks the control plane with the hash it computes itself.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import rfc8785
from langgraph.config import get_config
from langgraph.types import Command, interrupt

from shared.kernel.errors import ErrorCode

_log = logging.getLogger(__name__)

REMEDIATION_CONSTRAINT = "requires-human-approval-for-remediation"
#: Tools the platform implements (the control plane applies them through its cloud-resources port).
PLATFORM_TOOLS: Mapping[str, frozenset[str]] = {
    "cloud.stop_instance": frozenset({"compute:write"}),
    "cloud.resize_instance": frozenset({"compute:write"}),
}
INTERRUPT_KIND = "approval"


def canonical_action(*, agent_id: str, version: str, package_digest: str, tool: str, arguments: Any,
                     run_id: str, interrupt_id: str) -> bytes:
    """The action's RFC 8785 canonical JSON (the control plane builds the same bytes)."""
    return rfc8785.dumps({"agent_id": agent_id, "version": version, "package_digest": package_digest,
                          "tool": tool, "arguments": arguments, "run_id": run_id,
                          "interrupt_id": interrupt_id})


def package_digest(manifest: Mapping[str, Any]) -> str:
    """What identifies the agent package a run executes: the SHA-256 of its canonical manifest
    (a built-in agent's code ships with the platform at that version)."""
    return "sha256:" + hashlib.sha256(rfc8785.dumps(dict(manifest))).hexdigest()


def _saving_micros(arguments: Mapping[str, Any]) -> int:
    raw = arguments.get("estimated_monthly_saving_usd")
    if raw is None:
        return 0
    try:
        return int((Decimal(str(raw)) * 1_000_000).to_integral_value())
    except (InvalidOperation, ValueError):
        return 0


def bound_action(*, agent_id: str, version: str, package_digest: str, tool: str, arguments: Mapping[str, Any],
                 run_id: str, interrupt_id: str) -> dict[str, Any]:
    """A gated call as the control plane's ``await-approval`` takes it, bound by the SHA-256 of its
    canonical JSON. A run's parent rebuilds it from the child's tool, arguments and interrupt id
    (issue 14): the hash an approver decides on is never the agent's own word."""
    arguments = dict(arguments)
    canonical = canonical_action(agent_id=agent_id, version=version, package_digest=package_digest, tool=tool,
                                 arguments=arguments, run_id=run_id, interrupt_id=interrupt_id)
    impact = {"what": f"{tool} {rfc8785.dumps(arguments).decode()}", "reason": arguments.get("reason"),
              "estimated_monthly_saving_usd": str(arguments.get("estimated_monthly_saving_usd", "0"))}
    return {"interrupt_id": interrupt_id, "tool": tool, "arguments": arguments,
            "action_hash": hashlib.sha256(canonical).hexdigest(), "package_digest": package_digest,
            "impact": impact, "monthly_saving_micros": _saving_micros(arguments)}


class DecisionDesk(Protocol):
    """What a running graph's gate needs of a run's approvals: its decisions, the claim of an
    approved call, the record of what it did (a run's child reaches them through its parent)."""

    agent_id: str
    version: str
    run_id: str

    def decisions(self) -> list[dict[str, Any]]:
        """The run's decided approvals: ``approval_id``, ``interrupt_id``, ``status``, ``action_hash``."""
        ...

    def claim(self, approval_id: str, action_hash: str) -> dict[str, Any]:
        """May this call execute? Raises on a refusal (``stale_approval``, ``not_approved``)."""
        ...

    def record(self, approval_id: str, outcome: Mapping[str, Any], saving_micros: int) -> None:
        """Record what the executed call did."""
        ...


class ApprovalDesk(DecisionDesk, Protocol):
    """The control plane's side of a run's approvals (through the data-plane API): the decision
    desk, and the parking of a run's pending calls (the worker's, from the run's outcome)."""

    def park(self, actions: Sequence[Mapping[str, Any]]) -> None:
        """Report the run's pending gated calls; the run waits and its lease ends."""
        ...


class TaskApprovalDesk:
    """``ApprovalDesk`` of a leased task through ``DataPlaneClient``."""

    def __init__(self, client: Any, task: Any) -> None:
        self.client = client
        self.task = task
        self.agent_id = str(task.agent_id)
        self.version = str(task.version)
        self.run_id = str(task.run_id)

    def decisions(self) -> list[dict[str, Any]]:
        return list(self.client.approval_decisions(self.task))

    def claim(self, approval_id: str, action_hash: str) -> dict[str, Any]:
        return dict(self.client.claim_execution(self.task, approval_id, action_hash))

    def record(self, approval_id: str, outcome: Mapping[str, Any], saving_micros: int) -> None:
        self.client.record_execution(self.task, approval_id, outcome, saving_micros)

    def park(self, actions: Sequence[Mapping[str, Any]]) -> None:
        self.client.await_approval(self.task, actions)


@dataclass
class ApprovalGate:
    """Gates a run's remediation tool calls (see the module docstring)."""

    manifest: Mapping[str, Any]
    desk: DecisionDesk
    granted: frozenset[str]
    on_log: Callable[[str, Mapping[str, Any]], None] = lambda _message, _fields: None
    #: the package digest (issue 14: ``sha256:`` of the agent's package); None: the manifest's digest
    digest: str | None = None
    _counters: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.digest = self.digest or package_digest(self.manifest)
        self._declared = {str(t["name"]): t for t in self.manifest.get("tools") or ()}
        self._constraint = REMEDIATION_CONSTRAINT in (self.manifest.get("constraints") or ())

    def handles(self, name: str) -> bool:
        """Whether a call of ``name`` goes through the gate (a gated tool, or a platform tool)."""
        entry = self._declared.get(name)
        if entry is None:
            return False
        if name in PLATFORM_TOOLS or entry.get("requires_approval"):
            return True
        return self._constraint and any(str(p).endswith(":write") for p in entry.get("permissions") or ())

    def _interrupt_id(self) -> str:
        """Deterministic per call: the node's task (its checkpoint namespace) and the call's ordinal
        in it, so a replayed node rebuilds the same ids in the same order."""
        config = get_config()
        namespace = str((config.get("configurable") or {}).get("checkpoint_ns", ""))
        with self._lock:
            n = self._counters.get(namespace, 0)
            self._counters[namespace] = n + 1
        return f"{namespace}#{n}"

    def call(self, name: str, arguments: dict[str, Any], run: Callable[..., object] | None) -> object:
        """Gate one call; ``run`` is the agent's implementation (None for a platform tool)."""
        if name in PLATFORM_TOOLS:
            missing = PLATFORM_TOOLS[name] - self.granted
            if missing:
                from runtime.tools import ToolPermissionDenied  # noqa: PLC0415
                raise ToolPermissionDenied(name, missing, self.granted)
        interrupt_id = self._interrupt_id()
        action = bound_action(agent_id=self.desk.agent_id, version=self.desk.version,
                              package_digest=self.digest or package_digest(self.manifest),
                              tool=name, arguments=arguments, run_id=self.desk.run_id, interrupt_id=interrupt_id)
        call_hash, saving = action["action_hash"], action["monthly_saving_micros"]
        decision = interrupt({"kind": INTERRUPT_KIND, **action})
        status = str((decision or {}).get("status")) if isinstance(decision, Mapping) else "invalid"
        if status != "approved":
            self.on_log(f"Gated call {name} not approved ({status}): not executed",
                        {"tool": name, "status": status, "interrupt_id": interrupt_id})
            return {"executed": False, "status": status}
        approval_id = str(decision["approval_id"])
        try:
            claim = self.desk.claim(approval_id, call_hash)
        except Exception as exc:
            code = getattr(exc, "code", "")
            if code in (ErrorCode.STALE_APPROVAL, ErrorCode.NOT_APPROVED):
                self.on_log(f"Gated call {name} refused: {code}", {"tool": name, "approval_id": approval_id,
                                                                   "call_hash": call_hash})
                return {"executed": False, "status": code}
            raise
        if not claim.get("execute"):
            execution = claim.get("execution") or {}
            return {"executed": True, "status": "approved", "approval_id": approval_id,
                    "outcome": execution.get("outcome"), "monthly_saving_micros":
                        execution.get("monthly_saving_micros", saving)}
        if run is None:
            raise RuntimeError(f"platform tool {name} was not applied by the control plane")
        outcome = run(**arguments)
        shown = outcome if isinstance(outcome, Mapping) else {"result": outcome}
        self.desk.record(approval_id, dict(shown), saving)
        return {"executed": True, "status": "approved", "approval_id": approval_id, "outcome": dict(shown),
                "monthly_saving_micros": saving}


def pending_actions(graph: Any, config: Any) -> list[dict[str, Any]]:
    """The gated calls the graph stopped at (its pending approval interrupts), as the control
    plane's ``await-approval`` takes them."""
    snapshot = graph.get_state(config)
    actions = []
    for pending in getattr(snapshot, "interrupts", ()) or ():
        value = pending.value
        if isinstance(value, Mapping) and value.get("kind") == INTERRUPT_KIND:
            actions.append({k: value[k] for k in ("interrupt_id", "tool", "arguments", "action_hash",
                                                  "package_digest", "impact", "monthly_saving_micros")})
    return actions


def resume_command(graph: Any, config: Any, desk: DecisionDesk) -> Command[Any] | None:
    """The ``Command`` that answers the graph's pending approval interrupts with their decisions;
    None when it stopped at none (a plain redelivery resumes with ``None``)."""
    snapshot = graph.get_state(config)
    pending = [p for p in getattr(snapshot, "interrupts", ()) or ()
               if isinstance(p.value, Mapping) and p.value.get("kind") == INTERRUPT_KIND]
    if not pending:
        return None
    decided = {d["interrupt_id"]: d for d in desk.decisions()}
    answers: dict[str, Any] = {}
    for p in pending:
        decision = decided.get(p.value["interrupt_id"])
        if decision is None:
            raise RuntimeError(f"no decision for interrupt {p.value['interrupt_id']} yet")
        answers[p.id] = {"status": decision["status"], "approval_id": decision["approval_id"],
                         "action_hash": decision["action_hash"]}
    return Command(resume=answers)
