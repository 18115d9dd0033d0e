"""Helpers for the run tests: install the built-in cost-anomaly agent and act as its data plane."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.wait import wait_until

from runtime.client import DataPlaneClient
from runtime.worker import Worker, WorkerOptions

ROOT = Path(__file__).resolve().parents[2]
FOCUS_SAMPLE = ROOT / "agents" / "cost-anomaly" / "cost_anomaly" / "data" / "focus_sample.csv"
AGENT = "cost-anomaly-detector"


@dataclass
class Installed:
    """A registered SaaS deployment of the built-in agent, its org admin and its data-plane key."""

    admin: Any
    org_id: str
    deployment_id: str
    agent_id: str
    key: str


def install_builtin(container: Any, make_org: Any, anon: Any, settings: Any, *, config: dict[str, Any] | None = None,
                    register: bool = True, org: tuple[Any, str] | None = None) -> Installed:
    """Seed the built-in agents, install the cost-anomaly agent in a new org and register its data plane."""
    container.catalog.publish_builtin_agents()
    admin, org_id = org or make_org()
    # Installed by id: the install flow stores what it is given as the deployment's agent id.
    agent_id = admin.get(f"/agents/{AGENT}").body["listing"]["id"]
    resp = admin.post(f"/orgs/{org_id}/install", json={
        "agent_id": agent_id, "config": config or {"billing_source": str(FOCUS_SAMPLE)}})
    assert resp.status == 201, resp
    dep = resp.body
    key = json.loads((settings.dataplanes_dir / f"{dep['id']}.json").read_text())["api_key"]
    if register:
        reg = anon.post("/dataplanes/register", token=key,
                        json={"version": "test", "hostname": "test", "capabilities": ["langgraph"]})
        assert reg.status == 200, reg
    return Installed(admin=admin, org_id=org_id, deployment_id=dep["id"], agent_id=dep["agent_id"], key=key)


def start_run(client: Any, inst: Installed, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = client.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                "inputs": inputs or {}})
    assert resp.status == 201, resp
    return resp.body


def claim(anon: Any, key: str, *, wait: float = 5, lease: int = 60) -> dict[str, Any] | None:
    resp = anon.get(f"/tasks/next?wait={wait}&lease_seconds={lease}", token=key)
    assert resp.status in (200, 204), resp
    return resp.body if resp.status == 200 else None


def metrics(records: int = 0, cpu: float = 0.0) -> dict[str, Any]:
    return {"records_processed": records, "cpu_seconds": cpu}


@contextlib.contextmanager
def thread_worker(live_url: str, key: str, *, lease_seconds: int = 10) -> Iterator[Worker]:
    """A worker in a thread of this process, stopped (drained) on exit."""
    client = DataPlaneClient(live_url, key)
    worker = Worker(client, options=WorkerOptions(lease_seconds=lease_seconds, poll_wait=1.0, drain_seconds=5))
    stop = threading.Event()
    thread = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.registration is not None, what="the worker to register")
        yield worker
    finally:
        stop.set()
        thread.join(timeout=20)
        client.close()
        assert not thread.is_alive()
