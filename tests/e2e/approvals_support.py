"""Helpers for the approval tests: park a run of the built-in agent at a gated call, as its data plane would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runs_support import Installed, claim, install_builtin, start_run

from shared.approvals import action_hash, canonical_action

TOOL = "compute.stop_resource"


@dataclass
class Parked:
    inst: Installed
    run: dict[str, Any]
    task: dict[str, Any]
    approvals: list[dict[str, Any]]
    starter: Any


def proposed(run: dict[str, Any], interrupt_id: str = "int-0", *, arguments: dict[str, Any] | None = None,
             digest: str = "sha256:test") -> dict[str, Any]:
    arguments = arguments if arguments is not None else {"resource_id": "vm-idle-1", "action": "stop"}
    canonical = canonical_action(agent_id=run["agent_id"], version=run["version"], package_digest=digest, tool=TOOL,
                                 arguments=arguments, run_id=run["id"], interrupt_id=interrupt_id)
    return {"interrupt_id": interrupt_id, "tool": TOOL, "arguments": arguments, "action_hash": action_hash(canonical),
            "package_digest": digest, "impact": {"what": "stop vm-idle-1", "monthly_saving_usd": "120.00"},
            "monthly_saving_micros": 120_000_000}


def park(container: Any, make_org: Any, anon: Any, settings: Any, member: Any, *, actions: int = 1,
         inst: Installed | None = None, starter: Any = None) -> Parked:
    """A run started by an operator of a new org, claimed and parked at ``actions`` gated calls."""
    inst = inst or install_builtin(container, make_org, anon, settings)
    starter = starter or member(inst.admin, inst.org_id, "operator")
    run = start_run(starter, inst)
    task = claim(anon, inst.key)
    assert task is not None and task["run_id"] == run["id"]
    resp = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/await-approval", token=inst.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"],
        "actions": [proposed(run, f"int-{i}") for i in range(actions)]})
    assert resp.status == 200, resp
    return Parked(inst, run, task, resp.body["approvals"], starter)
