"""The data plane end to end: real workers (threads and processes) talking HTTP to the gateway served
by a real werkzeug server, executing the built-in cost-anomaly agent with LangGraph.

Runs, the live log stream, a worker killed with SIGKILL mid-run (redelivery and resume from the
checkpoint, one completion), cancel while running, permission denial, retries until dead, the
container runner, the Cloud Run job entrypoint and the local worker pool.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from runs_support import FOCUS_SAMPLE, ROOT, Installed, install_builtin, start_run, thread_worker
from support.cli import MARKETPLACE, read_until_ready
from support.wait import wait_until

from runtime.pool import WorkerPool, source_paths
from shared.kernel.net import free_port

FINAL = {"succeeded", "failed", "cancelled", "dead"}




@pytest.fixture(scope="module")
def big_focus(agent_files: Path) -> Path:
    """60,000 generated FOCUS rows with a spike and a new service injected."""
    path = agent_files / "injected.csv"
    subprocess.run([sys.executable, str(ROOT / "agents" / "cost-anomaly" / "tests" / "focus_gen.py"), "--rows", "60000", "--out", str(path),
                    "--seed", "1", "--hours-per-day", "4", "--weekend-factor", "0.7",
                    "--spike", "2024-09-17:6", "--new-service", "2024-09-24:400"],
                   check=True, capture_output=True)
    return path


def runner_process(live_url: str, key: str, *, lease_seconds: int = 2, port: int = 0,
                   module: str = "runtime.runner", extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MARKETPLACE_CONTROL_PLANE_URL": live_url, "MARKETPLACE_DATAPLANE_KEY": key,
           "MARKETPLACE_DATAPLANE_PORT": str(port), "MARKETPLACE_DATAPLANE_HOST": "127.0.0.1",
           "MARKETPLACE_LEASE_SECONDS": str(lease_seconds), "MARKETPLACE_POLL_WAIT": "1",
           "MARKETPLACE_LOG_LEVEL": "WARNING", "PYTHONPATH": os.pathsep.join(source_paths()), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


def wait_ready(inst: Installed) -> None:
    """Until the worker has registered the deployment's data plane."""
    url = f"/orgs/{inst.org_id}/deployments/{inst.deployment_id}"
    wait_until(lambda: inst.admin.get(url).body["status"] == "ready", timeout=30, what="the data plane to register")


def run_of(inst: Installed, run_id: str) -> dict[str, Any]:
    resp = inst.admin.get(f"/agents/{inst.agent_id}/runs/{run_id}")
    assert resp.status == 200, resp
    return resp.body


def finished(inst: Installed, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    return wait_until(lambda: (r := run_of(inst, run_id))["status"] in FINAL and r, timeout=timeout,
                      interval=0.2, what=f"run {run_id} to finish")


def all_logs(inst: Installed, run_id: str) -> list[dict[str, Any]]:
    return inst.admin.get(f"/agents/{inst.agent_id}/runs/{run_id}/logs?limit=1000").body["items"]


def follow_sse(live_url: str, inst: Installed, run_id: str, timeout: float = 60.0) -> list[tuple[str, dict]]:
    """Every (event, data) of the live stream, until it ends."""
    events: list[tuple[str, dict]] = []
    headers = {"Authorization": f"Bearer {inst.admin.token}", "Accept": "text/event-stream"}
    with httpx.stream("GET", f"{live_url}/agents/{inst.agent_id}/runs/{run_id}/logs", headers=headers,
                      timeout=timeout) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        event, data = None, None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and event is not None:
                events.append((event, data))
                event, data = None, None
    return events


def test_a_run_end_to_end_with_live_logs(live_url, container, make_org, anon, settings):
    inst = install_builtin(container, make_org, anon, settings, register=False)
    with thread_worker(live_url, inst.key):
        run = start_run(inst.admin, inst, {"lookback_days": 30, "currency": "USD"})
        events = follow_sse(live_url, inst, run["id"])
    logs = [data for event, data in events if event == "log"]
    assert events[-1] == ("end", {"run_id": run["id"], "status": "succeeded", "last_seq": logs[-1]["seq"]})
    assert [line["seq"] for line in logs] == list(range(1, len(logs) + 1))
    assert [(line["step"], line["message"]) for line in logs] == [
        ("fetch_billing_data", "Fetching billing data"),
        ("fetch_billing_data", "Fetched 1000 records"),
        ("normalize", "Normalizing records"),
        ("normalize", "Normalization complete"),
        ("detect_anomalies", "Analyzing patterns"),
        ("detect_anomalies", "Detected 0 anomalies"),
        ("generate_recommendations", "Generating recommendations"),
        ("generate_recommendations", "0 recommendations generated"),
        ("report", "Writing report"),
        ("report", "Report complete"),
    ]
    final = run_of(inst, run["id"])
    assert final["status"] == "succeeded" and final["attempt"] == 1 and final["error"] is None
    outputs = final["outputs"]
    assert isinstance(outputs["anomalies"], list) and isinstance(outputs["recommendations"], list)
    assert outputs["totals"]["records"] == 1000 and "# Cost anomaly report" in outputs["report_markdown"]
    metrics = final["metrics"]
    assert metrics["records_processed"] == 1000 and metrics["steps"] == 5 and metrics["tool_calls"] == 1
    assert 0 < metrics["cpu_seconds"] < 60 and metrics["duration_ms"] > 0 and metrics["attempts"] == 1
    assert str(FOCUS_SAMPLE) not in json.dumps(logs)  # the billing source may carry a credential


def test_a_worker_killed_mid_run_loses_no_run(live_url, container, make_org, anon, settings, big_focus):
    inst = install_builtin(container, make_org, anon, settings, config={"billing_source": str(big_focus)},
                           register=False)
    first = runner_process(live_url, inst.key, lease_seconds=2)
    second = None
    try:
        wait_ready(inst)
        run = start_run(inst.admin, inst)

        def fetched() -> bool:  # the checkpoint after the fetch step: the run is mid-way
            with container.db.read() as tx:
                return bool(tx.fetch_val("SELECT count(*) FROM run_checkpoints WHERE run_id = %s "
                                         "AND (progress->>'records_processed')::float > 0", run["id"]))

        wait_until(fetched, timeout=60, interval=0.02, what="the fetch step's checkpoint")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert run_of(inst, run["id"])["status"] == "running"
        second = runner_process(live_url, inst.key, lease_seconds=2)
        final = finished(inst, run["id"], timeout=90)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert final["status"] == "succeeded" and final["attempt"] == 2, final
    # Counted once: the resumed attempt did not fetch again, its counters came from the checkpoint.
    assert final["metrics"]["records_processed"] == 60000 and final["metrics"]["tool_calls"] == 1
    assert final["metrics"]["steps"] == 5
    outputs = final["outputs"]
    assert outputs["anomalies"] and outputs["recommendations"] and "# Cost anomaly report" in outputs["report_markdown"]
    messages = [(line["attempt"], line["message"]) for line in all_logs(inst, final["id"])]
    assert messages.count((1, "Fetching billing data")) == 1 and (2, "Fetching billing data") not in messages
    assert (2, "Resuming attempt 2 from the last checkpoint") in messages
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert actions.count("run.succeeded") == 1
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM run_checkpoints WHERE run_id = %s", final["id"]) == 0
    assert container.queue.get(_task_of(container, final["id"])).state == "done"


def _task_of(container: Any, run_id: str) -> str:
    with container.db.read() as tx:
        return str(tx.fetch_val("SELECT task_id FROM runs WHERE id = %s", run_id))


def test_cancel_while_running_stops_between_steps(live_url, container, make_org, anon, settings, big_focus):
    inst = install_builtin(container, make_org, anon, settings, config={"billing_source": str(big_focus)},
                           register=False)
    with thread_worker(live_url, inst.key, lease_seconds=2):
        run = start_run(inst.admin, inst)
        wait_until(lambda: run_of(inst, run["id"])["status"] == "running", what="the run to start")
        flagged = inst.admin.post(f"/agents/{inst.agent_id}/runs/{run['id']}/cancel").body
        assert flagged["cancel_requested"] is True
        final = finished(inst, run["id"])
    assert final["status"] == "cancelled" and final["outputs"] is None
    assert final["metrics"]["steps"] < 5
    assert [line["message"] for line in all_logs(inst, run["id"])][-1] == "Run cancelled between steps"


def test_a_tool_without_its_permission_is_denied_and_fails_the_step(live_url, container, make_org, anon, settings):
    inst = install_builtin(container, make_org, anon, settings, register=False)
    with container.db.transaction() as tx:  # the org granted only the write permission
        tx.execute("UPDATE deployments SET granted_permissions = '[\"compute:write\"]' WHERE id = %s",
                   inst.deployment_id)
    with thread_worker(live_url, inst.key):
        run = start_run(inst.admin, inst)
        final = finished(inst, run["id"])
    assert final["status"] == "failed" and final["attempt"] == 1
    assert final["error"].startswith("ToolPermissionDenied: tool 'billing.read_focus' needs permission billing:read")
    lines = all_logs(inst, run["id"])
    refused = [line for line in lines if line["message"].startswith("Tool call refused")]
    assert refused and refused[0]["level"] == "error" and refused[0]["step"] == "fetch_billing_data"
    assert refused[0]["fields"]["missing_permissions"] == ["billing:read"]
    assert final["metrics"]["records_processed"] == 0


def test_a_run_that_keeps_failing_is_dead_after_its_attempts(live_url, container, make_org, anon, settings):
    closed_port = free_port()  # nothing listens here
    inst = install_builtin(container, make_org, anon, settings, register=False,
                           config={"billing_source": f"http://127.0.0.1:{closed_port}/focus.csv"})
    with thread_worker(live_url, inst.key):
        run = start_run(inst.admin, inst)
        final = finished(inst, run["id"], timeout=60)
    assert final["status"] == "dead" and final["attempt"] == 3
    assert final["error"].startswith("gave up after 3 attempts: FocusSourceError: cannot fetch billing data")
    failures = [line for line in all_logs(inst, run["id"]) if line["message"].startswith("Step failed")]
    assert [line["attempt"] for line in failures] == [1, 2, 3] and failures[0]["fields"]["retryable"] is True


def test_the_container_runner_serves_health_and_drains_on_sigterm(live_url, container, make_org, anon, settings):
    inst = install_builtin(container, make_org, anon, settings, register=False)
    port = free_port()
    proc = runner_process(live_url, inst.key, port=port, lease_seconds=10)
    try:
        health = wait_until(lambda: _health(port), timeout=30, what="the runner's /health")
        assert health["status"] == "ok" and health["deployment_id"] == inst.deployment_id
        wait_ready(inst)
        run = start_run(inst.admin, inst)
        assert finished(inst, run["id"])["status"] == "succeeded"
        assert wait_until(lambda: (_health(port) or {}).get("runs_done") == 1, what="the runner to count the run")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _health(port: int) -> dict[str, Any] | None:
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.TransportError:
        return None
    return resp.json() if resp.status_code == 200 else None


def test_the_cloud_run_job_runs_one_task_and_exits(live_url, container, make_org, anon, settings):
    inst = install_builtin(container, make_org, anon, settings)
    first, second = start_run(inst.admin, inst), start_run(inst.admin, inst)
    job = runner_process(live_url, inst.key, module="jobs.agent_run", lease_seconds=10,
                         extra_env={"MARKETPLACE_TASK_WAIT": "5"})
    assert job.wait(timeout=60) == 0
    assert run_of(inst, first["id"])["status"] == "succeeded"
    assert run_of(inst, second["id"])["status"] == "queued"  # one task per job execution


def test_the_local_pool_serves_the_provisioned_deployments(live_url, container, make_org, anon, settings,
                                                           tmp_path):
    inst = install_builtin(container, make_org, anon, settings, register=False)
    folder = tmp_path / "dataplanes"
    folder.mkdir()
    shutil.copy(settings.dataplanes_dir / f"{inst.deployment_id}.json", folder)
    pool = WorkerPool(folder, live_url, processes=2, lease_seconds=10, poll_wait=1.0, drain_seconds=5)
    pool.start()
    try:
        assert len(pool.pids) == 2
        wait_ready(inst)
        runs = [start_run(inst.admin, inst) for _ in range(4)]
        results = [finished(inst, run["id"]) for run in runs]
        assert {r["status"] for r in results} == {"succeeded"}
        assert all(r["metrics"]["records_processed"] == 1000 for r in results)
        # A deployment removed from the folder is no longer served.
        (folder / f"{inst.deployment_id}.json").unlink()
        time.sleep(3)
        late = start_run(inst.admin, inst)
        time.sleep(2)
        assert run_of(inst, late["id"])["status"] == "queued"
    finally:
        started = time.monotonic()
        pool.stop()
        assert time.monotonic() - started < 30
    assert pool.pids == []
    inst.admin.post(f"/agents/{inst.agent_id}/runs/{late['id']}/cancel")


@pytest.mark.embedded_postgres
def test_marketplace_up_runs_agents_with_its_worker_pool():
    # Not pytest's tmp_path (private): as root, PostgreSQL runs as a service user who must reach it.
    base = Path(tempfile.mkdtemp(prefix="marketplace-up-"))
    base.chmod(0o755)
    data_dir = base / "data"
    port = free_port()
    proc = subprocess.Popen([str(MARKETPLACE), "up", "--port", str(port), "--data-dir", str(data_dir),
                             "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "MARKETPLACE_LOG_LEVEL": "WARNING"})
    url = f"http://127.0.0.1:{port}"
    try:
        read_until_ready(proc)
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        token = subprocess.run([str(MARKETPLACE), "token", "--email", "up@example.com", "--data-dir", str(data_dir)],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        org_id = api.post("/orgs", json={"name": "Up"}).json()["id"]
        agent_id = api.get("/agents/cost-anomaly-detector").json()["listing"]["id"]
        # No config at all: the built-in agent reads its shipped demo export (issue 19).
        installed = api.post(f"/orgs/{org_id}/install", json={"agent_id": agent_id})
        assert installed.status_code == 201, installed.text
        dep = installed.json()
        wait_until(lambda: api.get(f"/orgs/{org_id}/deployments/{dep['id']}").json()["status"] == "ready",
                   timeout=60, what="the pool to register the deployment")
        run = api.post(f"/agents/{agent_id}/runs", json={"deployment_id": dep["id"]}).json()
        # The live log stream through the HTTP server: every line as it comes, then the end.
        events: list[str] = []
        with api.stream("GET", f"/agents/{agent_id}/runs/{run['id']}/logs", params={"stream": "true"},
                        timeout=90) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                if events[-1:] == ["end"]:
                    break
        assert events[-1] == "end" and events.count("log") >= 4, events
        final = wait_until(lambda: (r := api.get(f"/agents/{agent_id}/runs/{run['id']}").json())["status"] in FINAL
                           and r, timeout=60, what="the run")
        assert final["status"] == "succeeded" and final["metrics"]["records_processed"] == 1500
        kinds = sorted(a["kind"] for a in final["outputs"]["anomalies"])
        assert kinds == ["new_service", "spike", "step_change"], kinds
        api.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=90)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    assert proc.returncode == 0
