"""The runner's approval gate with the built-in agent, LangGraph and an in-process checkpoint store:
a gated call stops the run (interrupt), its action hashes as the control plane's canonical JSON
does, the resume answers it, and the call executes only when the control plane's claim agrees."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from runtime.approvals import ApprovalGate, package_digest
from runtime.checkpointer import MemoryCheckpointStore
from runtime.client import ControlPlaneError
from runtime.executor import Executor, MemoryRunLog, RunSpec
from shared.approvals import action_hash, canonical_action

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((ROOT / "agents/cost-anomaly/manifest.yaml").read_text())


class Desk:
    """The control plane's side at the port: decisions, and the claim rule (approved hash only, once)."""

    agent_id, version, run_id = "agt_x", "1.1.0", "run_gate"

    def __init__(self) -> None:
        self.parked: list[dict[str, Any]] = []
        self.decided: dict[str, dict[str, Any]] = {}
        self.claims: list[tuple[str, str]] = []
        self.executed: dict[str, dict[str, Any]] = {}

    def decisions(self) -> list[dict[str, Any]]:
        return list(self.decided.values())

    def claim(self, approval_id: str, call_hash: str) -> dict[str, Any]:
        self.claims.append((approval_id, call_hash))
        decision = next(d for d in self.decided.values() if d["approval_id"] == approval_id)
        if decision["action_hash"] != call_hash:
            raise ControlPlaneError(409, "stale_approval", "differs")
        execution = self.executed.setdefault(approval_id, {"outcome": {"state": "stopped"},
                                                           "monthly_saving_micros": 1})
        return {"approval_id": approval_id, "execute": False, "execution": execution}

    def record(self, approval_id: str, outcome: Mapping[str, Any], saving_micros: int) -> None:
        raise AssertionError("a platform tool is applied by the control plane")

    def park(self, actions: Sequence[Mapping[str, Any]]) -> None:
        self.parked.extend(dict(a) for a in actions)

    def decide(self, status: str, *, action_hash: str | None = None) -> None:
        for action in self.parked:
            self.decided[action["interrupt_id"]] = {"approval_id": f"apr_{len(self.decided)}", "status": status,
                                                    "interrupt_id": action["interrupt_id"],
                                                    "action_hash": action_hash or action["action_hash"]}


def _spec(tmp_path: Path) -> RunSpec:
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from approvals_support import idle_focus

    path = tmp_path / "idle.csv"
    idle_focus(path)
    return RunSpec(run_id="run_gate", manifest=MANIFEST, config={"billing_source": str(path),
                                                                 "remediation": "approve_and_execute"},
                   inputs={}, granted_permissions=["billing:read", "compute:write"])


def test_a_gated_call_waits_then_executes_once_approved(tmp_path: Path) -> None:
    spec, desk, store = _spec(tmp_path), Desk(), MemoryCheckpointStore()
    first = Executor().execute(spec, log=MemoryRunLog(), checkpoints=store, approvals=desk)
    assert first.status == "awaiting_approval"
    [action] = first.outputs["actions"]  # type: ignore[index]
    assert action["tool"] == "cloud.stop_instance" and action["arguments"]["resource_id"] == "i-idle-1"
    canonical = canonical_action(agent_id=desk.agent_id, version=desk.version, package_digest=package_digest(MANIFEST),
                                 tool=action["tool"], arguments=action["arguments"], run_id=desk.run_id,
                                 interrupt_id=action["interrupt_id"])
    assert action["action_hash"] == action_hash(canonical) == hashlib.sha256(canonical).hexdigest()
    desk.park(first.outputs["actions"])  # type: ignore[index]
    desk.decide("approved")
    second = Executor().execute(spec, log=MemoryRunLog(), checkpoints=store, approvals=desk)
    assert second.status == "succeeded", second.error
    [done] = second.outputs["remediations"]  # type: ignore[index]
    assert done["executed"] is True and done["outcome"] == {"state": "stopped"}
    assert desk.claims == [("apr_0", action["action_hash"])]


def test_a_call_that_differs_from_the_approved_one_is_refused(tmp_path: Path) -> None:
    spec, desk, store = _spec(tmp_path), Desk(), MemoryCheckpointStore()
    first = Executor().execute(spec, log=MemoryRunLog(), checkpoints=store, approvals=desk)
    desk.park(first.outputs["actions"])  # type: ignore[index]
    desk.decide("approved", action_hash="0" * 64)  # approved a different action
    second = Executor().execute(spec, log=MemoryRunLog(), checkpoints=store, approvals=desk)
    assert second.status == "succeeded"
    assert second.outputs["remediations"][0]["status"] == "stale_approval"  # type: ignore[index]
    assert second.outputs["remediations"][0]["executed"] is False  # type: ignore[index]


def test_rejected_calls_take_the_not_approved_path(tmp_path: Path) -> None:
    spec, desk, store = _spec(tmp_path), Desk(), MemoryCheckpointStore()
    first = Executor().execute(spec, log=MemoryRunLog(), checkpoints=store, approvals=desk)
    desk.park(first.outputs["actions"])  # type: ignore[index]
    desk.decide("rejected")
    second = Executor().execute(spec, log=MemoryRunLog(), checkpoints=store, approvals=desk)
    assert second.outputs["remediations"][0]["status"] == "rejected" and desk.claims == []  # type: ignore[index]


def test_which_calls_are_gated() -> None:
    manifest = {**MANIFEST, "tools": [*MANIFEST["tools"], {"name": "ops.note", "description": "d",
                                                           "permissions": ["billing:read"], "requires_approval": True}]}
    gate = ApprovalGate(manifest, Desk(), frozenset({"compute:write"}))
    assert gate.handles("cloud.stop_instance") and gate.handles("compute.propose_remediation")  # a write tool
    assert gate.handles("ops.note") and not gate.handles("billing.read_focus") and not gate.handles("unknown")
    no_constraint = ApprovalGate({**MANIFEST, "constraints": []}, Desk(), frozenset())
    assert not no_constraint.handles("compute.propose_remediation") and no_constraint.handles("cloud.stop_instance")
