"""Helpers for the approval tests: park a run of the built-in agent at a gated call, as its data plane would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from runs_support import ROOT, Installed, claim, install_builtin, start_run

from shared.approvals import action_hash, canonical_action
from shared.catalog import AgentManifest, code_digest

BUILTIN_MANIFEST = ROOT / "agents" / "cost-anomaly" / "manifest.yaml"

TOOL = "compute.stop_resource"


@dataclass
class Parked:
    inst: Installed
    run: dict[str, Any]
    task: dict[str, Any]
    approvals: list[dict[str, Any]]
    starter: Any


def builtin_digest() -> str:
    """The code digest of the built-in agent's published version (it has no package: its canonical
    manifest's SHA-256), as its data plane reports it with a gated action."""
    manifest = AgentManifest.model_validate(yaml.safe_load(BUILTIN_MANIFEST.read_text()))
    return code_digest(manifest.model_dump(mode="json"), None)


def proposed(run: dict[str, Any], interrupt_id: str = "int-0", *, arguments: dict[str, Any] | None = None,
             digest: str | None = None) -> dict[str, Any]:
    digest = builtin_digest() if digest is None else digest
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


def idle_focus(path: Any, *, idle: tuple[str, ...] = ("i-idle-1",), busy: tuple[str, ...] = ("i-busy-1", "i-busy-2"),
               rate: float = 0.5) -> str:
    """A FOCUS 1.0 CSV shaped like the sample: 30 days of hourly instances, the ``idle`` ones with
    no consumed quantity (the agent proposes to stop them); returns the CSV text (also written to ``path``)."""
    import csv
    import io
    from datetime import date, timedelta

    from runs_support import FOCUS_SAMPLE

    with FOCUS_SAMPLE.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        template = next(r for r in reader if r["ConsumedUnit"] == "Hours" and r["ResourceType"] == "instance")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    n = 0
    for resource in (*idle, *busy):
        for d in range(30):
            day = date(2024, 9, 1) + timedelta(days=d)
            n += 1
            writer.writerow({**template, "Id": str(n), "ResourceId": resource, "ResourceName": resource,
                             "ChargePeriodStart": f"{day} 00:00:00", "ChargePeriodEnd": f"{day + timedelta(days=1)} 00:00:00",
                             "BilledCost": f"{rate * 24:.11f}", "ListCost": f"{rate * 24:.11f}",
                             "ConsumedQuantity": "0.000000000000000" if resource in idle else "24.000000000000000",
                             "PricingQuantity": "24.00000000000"})
    text = out.getvalue()
    path.write_text(text)
    return text
