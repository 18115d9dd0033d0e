"""The built-in agent learns (issue 17, item 8): a real worker runs the cost-anomaly agent twice
over the same data; the first run's summary and episode are stored, an approver rejects one of
its remediations, and the second run does not propose it again and uses the org's thresholds."""

from __future__ import annotations

import csv
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from runs_support import FOCUS_SAMPLE, Installed, install_builtin, start_run, thread_worker
from support.wait import wait_until

AGENT = "cost-anomaly-detector"


def _idle_volume_export(path: Path) -> Path:
    """The sample export plus a month of an idle volume (costs, consumes nothing): the agent
    proposes to stop it, and a commitment for the service."""
    with FOCUS_SAMPLE.open(newline="") as source:
        rows = list(csv.DictReader(source))
    template = next(r for r in rows if r["ResourceType"] == "volume" and r["ConsumedUnit"] == "GB-Months")
    for n in range(30):
        day = date(2024, 9, 1) + timedelta(days=n)
        rows.append({**template, "ResourceId": "vol-idle-memory", "ChargePeriodStart": f"{day} 00:00:00",
                     "ChargePeriodEnd": f"{day + timedelta(days=1)} 00:00:00", "BilledCost": "3.0",
                     "EffectiveCost": "3.0", "ListCost": "3.0", "ContractedCost": "3.0", "ConsumedQuantity": "0"})
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _finished(inst: Installed, run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = inst.admin.get(f"/agents/{inst.agent_id}/runs/{run_id}").body
        return run if run["status"] in {"succeeded", "failed", "cancelled", "dead"} else None

    return wait_until(done, timeout=90, interval=0.2, what=f"run {run_id} to finish")


def _logs(inst: Installed, run_id: str) -> list[str]:
    return [line["message"] for line in
            inst.admin.get(f"/agents/{inst.agent_id}/runs/{run_id}/logs?limit=1000").body["items"]]


def test_the_second_run_respects_rejections_and_preferences(live_url: str, container: Any, make_org: Any,
                                                            anon: Any, settings: Any, agent_files: Path) -> None:
    export = _idle_volume_export(agent_files / f"idle-{uuid.uuid4().hex}.csv")
    inst = install_builtin(container, make_org, anon, settings, register=False,
                           config={"billing_source": str(export)})
    prefs = inst.admin.put(f"/orgs/{inst.org_id}/preferences",
                           json={"data": {"cost_anomaly": {"sensitivity": 4, "min_cost_usd": 1.0}}})
    assert prefs.status == 200, prefs
    with thread_worker(live_url, inst.key):
        first = _finished(inst, start_run(inst.admin, inst)["id"])
        assert first["status"] == "succeeded", first
        proposals = {p["action"]: p for p in first["outputs"]["proposals"]}
        assert "stop_resource" in proposals and len(proposals) >= 2
        # The org's thresholds (Level 5) won over the deployment's defaults.
        assert first["outputs"]["detection"]["z_threshold"] == 4.0
        assert first["outputs"]["detection"]["min_cost_usd"] == 1.0

        # What the run learned is in the org's memory: a summary (L2) and an episode (L4).
        summaries = inst.admin.get(f"/orgs/{inst.org_id}/memory/search?level=2&query=run+of+{AGENT}").body["items"]
        assert [s["metadata"]["run_id"] for s in summaries] == [first["id"]]
        assert f"agent:{AGENT}" in summaries[0]["subjects"]
        episodes = inst.admin.get(f"/orgs/{inst.org_id}/memory/search?level=4&query=proposed+remediations").body["items"]
        assert [e["metadata"]["run_id"] for e in episodes] == [first["id"]]
        assert set(episodes[0]["metadata"]["proposed"]) == {p["action_id"] for p in proposals.values()}

        # An approver rejects stopping the volume (what the approvals workflow records).
        stop = proposals["stop_resource"]
        container.memory.record_remediation(inst.org_id, agent=AGENT, run_id=first["id"], action_id=stop["action_id"],
                                            decision="rejected", description="stop volume vol-idle-memory",
                                            actor="user:approver")

        second = _finished(inst, start_run(inst.admin, inst)["id"])
    assert second["status"] == "succeeded", second
    again = {p["action_id"] for p in second["outputs"]["proposals"]}
    assert stop["action_id"] not in again
    assert again == {p["action_id"] for p in proposals.values()} - {stop["action_id"]}
    assert "Skipped 1 remediation rejected before" in _logs(inst, second["id"])
    assert second["outputs"]["detection"]["z_threshold"] == 4.0


def test_another_orgs_rejection_changes_nothing(live_url: str, container: Any, make_org: Any, anon: Any,
                                                settings: Any, agent_files: Path) -> None:
    export = _idle_volume_export(agent_files / f"idle-{uuid.uuid4().hex}.csv")
    mine = install_builtin(container, make_org, anon, settings, register=False, config={"billing_source": str(export)})
    other = install_builtin(container, make_org, anon, settings, register=False, config={"billing_source": str(export)})
    with thread_worker(live_url, mine.key):
        first = _finished(mine, start_run(mine.admin, mine)["id"])
    stop = next(p for p in first["outputs"]["proposals"] if p["action"] == "stop_resource")
    container.memory.record_remediation(mine.org_id, agent=AGENT, run_id=first["id"], action_id=stop["action_id"],
                                        decision="rejected", description="stop volume", actor="user:approver")
    with thread_worker(live_url, other.key):
        theirs = _finished(other, start_run(other.admin, other)["id"])
    assert stop["action_id"] in {p["action_id"] for p in theirs["outputs"]["proposals"]}
