"""Approvals: decision latency and listing throughput.

    .venv/bin/python bench/approvals.py [--samples 20] [--pending 10000]

Starts a fresh embedded PostgreSQL, the gateway (werkzeug, threaded, on a loopback port) and one
real worker thread (an idle data plane long-polling ``GET /tasks/next``), installs the built-in
cost-anomaly agent with ``remediation: approve_and_execute`` on FOCUS data with one idle instance,
and seeds the local inventory. Then:

1. **Decision latency** (``--samples`` times): start a run, wait until it is ``awaiting_approval``
   (the worker ran the agent to its gated call), approve it through the API, and take the time
   from the decision (``decided_at``) to the start of the action's execution
   (``execution_started_at``: the resumed run's claim of the approved call), both as the
   database recorded them. Prints p50 / p99 / max.
2. **Listing** at ``--pending`` pending approvals of one org: every page of
   ``GET /orgs/{id}/approvals?status=pending&limit=200`` through the gateway in-process; prints
   approvals listed per second and the p50 / p99 of one page.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(1, str(ROOT / "tests" / "e2e"))
sys.path.insert(1, str(ROOT / "tests"))  # support.wait, support.wsgi
sys.path.insert(1, str(ROOT / "agents" / "cost-anomaly"))  # this tree's agent package, as pytest's pythonpath

# ruff: noqa: E402 - the imports follow the sys.path fix
import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
import threading
import time
from typing import Any

from support.wait import wait_until
from support.wsgi import serve_wsgi

from functions.gateway import create_gateway
from runtime.client import DataPlaneClient
from runtime.worker import Worker, WorkerOptions
from shared.composition import build_container
from shared.kernel.adapters.embedded_pg import EmbeddedPostgres
from shared.kernel.settings import Settings


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Http:
    def __init__(self, app: Any, token: str) -> None:
        self.client, self.token = app.test_client(), token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {self.token}"})
        assert resp.status_code < 300, (path, resp.status_code, resp.get_data(as_text=True))
        return resp.get_json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--pending", type=int, default=10_000)
    args = parser.parse_args(argv)
    from approvals_support import idle_focus  # the tests' FOCUS data with one idle instance

    data_dir = Path(tempfile.mkdtemp(prefix="bench-approvals-"))
    data_dir.chmod(0o755)
    settings = Settings(mode="local", data_dir=data_dir, public_url="http://127.0.0.1", database_url=None,
                        rate_limit_principal=0, rate_limit_dataplane=0, rate_limit_anonymous=0, log_level="WARNING")
    container = build_container(settings)
    app = create_gateway(container)
    gateway = contextlib.ExitStack()
    url = gateway.enter_context(serve_wsgi(app, log_requests=False))
    stop = threading.Event()
    serving: threading.Thread | None = None
    try:
        container.catalog.publish_builtin_agents()
        admin = Http(app, container.identity.dev_grant("bench-admin@example.com").access_token)
        approver = Http(app, container.identity.dev_grant("bench-approver@example.com").access_token)
        org_id = admin.call("POST", "/orgs", {"name": "Bench"})["id"]
        admin.call("POST", f"/orgs/{org_id}/members", {"email": "bench-approver@example.com", "role": "approver"})
        focus = data_dir / "idle.csv"
        text = idle_focus(focus)
        agent_id = admin.call("GET", "/agents/cost-anomaly-detector")["listing"]["id"]
        dep = admin.call("POST", f"/orgs/{org_id}/install", {"agent_id": agent_id, "config": {
            "billing_source": str(focus), "remediation": "approve_and_execute"}})
        admin.call("POST", f"/orgs/{org_id}/cloud-resources/import", {"focus_csv": text})
        key = json.loads((settings.dataplanes_dir / f"{dep['id']}.json").read_text())["api_key"]
        client = DataPlaneClient(url, key)
        worker = Worker(client, options=WorkerOptions(lease_seconds=30, poll_wait=5.0, drain_seconds=5))
        serving = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
        serving.start()
        wait_until(lambda: worker.registration is not None, timeout=60, interval=0.005, what="the worker")

        latencies = []
        for _ in range(args.samples):
            run = admin.call("POST", f"/agents/{agent_id}/runs", {"deployment_id": dep["id"], "inputs": {}})
            status = lambda run=run: admin.call("GET", f"/agents/{agent_id}/runs/{run['id']}")["status"]  # noqa: E731
            wait_until(lambda status=status: status() in ("awaiting_approval", "succeeded", "failed", "dead"),
                       timeout=60, interval=0.005, what="the proposal")
            if status() != "awaiting_approval":
                raise SystemExit(f"the run did not stop for approval: {status()}")
            [pending] = admin.call("GET", f"/orgs/{org_id}/approvals?status=pending&run_id={run['id']}")["items"]
            approver.call("POST", f"/orgs/{org_id}/approvals/{pending['id']}/approve", {})
            wait_until(lambda status=status: status() in ("remediated", "succeeded", "failed", "dead"),
                       timeout=60, interval=0.005, what="the remediation")
            with container.db.read() as tx:
                row = tx.fetch_one("SELECT decided_at, execution_started_at FROM approvals WHERE id = %s",
                                   pending["id"])
            if row is None or row["execution_started_at"] is None:
                raise SystemExit(f"approval {pending['id']} did not execute")
            latencies.append((row["execution_started_at"] - row["decided_at"]).total_seconds() * 1000)
        print(f"decision latency (approve -> the action starts executing), {args.samples} samples, idle worker: "
              f"p50 {statistics.median(latencies):.1f} ms, p99 {_pct(latencies, 0.99):.1f} ms, "
              f"max {max(latencies):.1f} ms")

        # 10k pending approvals of one org, on one parked run (rows seeded directly).
        with container.db.transaction() as tx:
            run_id = tx.fetch_val("SELECT id FROM runs WHERE org_id = %s LIMIT 1", org_id)
            tx.execute(
                "INSERT INTO approvals (id, org_id, run_id, agent_id, version, package_digest, tool, arguments,"
                " action_canonical, action_hash, interrupt_id, requested_by, required_approvals,"
                " starter_may_approve, expires_at, created_at)"
                " SELECT 'apr_bench_' || g, %s, %s, %s, '1.1.0', 'sha256:x', 'cloud.stop_instance',"
                " '{\"resource_id\": \"i-idle-1\"}', '{}', repeat('a', 64), 'bench#' || g, 'user:x', 1, false,"
                " now() + interval '3 days', now() - (g || ' milliseconds')::interval"
                " FROM generate_series(1, %s) g", org_id, run_id, agent_id, args.pending)
        pages, listed, started = [], 0, time.perf_counter()
        cursor: str | None = None
        while True:
            t0 = time.perf_counter()
            page = admin.call("GET", f"/orgs/{org_id}/approvals?status=pending&limit=200"
                                     + (f"&cursor={cursor}" if cursor else ""))
            pages.append((time.perf_counter() - t0) * 1000)
            listed += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        elapsed = time.perf_counter() - started
        print(f"listing {listed} pending approvals (limit 200): {listed / elapsed:,.0f} approvals/s, "
              f"page p50 {statistics.median(pages):.1f} ms, p99 {_pct(pages, 0.99):.1f} ms")
        return 0
    finally:
        stop.set()
        if serving is not None:
            serving.join(timeout=15)
        gateway.close()
        container.close()
        EmbeddedPostgres(data_dir).stop(force=True)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
