"""A third-party agent package's run life cycle against the same graph run as a built-in agent.

    .venv/bin/python bench/agent_package.py [--runs 30] [--cold 8]

Starts a fresh embedded PostgreSQL, the gateway (werkzeug, threaded, on a loopback port) and one
real worker thread (``runtime.worker.Worker`` with the sandbox, as ``marketplace up``'s workers),
generates a trivial agent project with ``marketplace agent init`` (a two-node LangGraph graph and
one tool), publishes it as a package (``POST /agents``, ``PUT .../package``), approves and installs
it. Then, for each run, the life cycle through the API: ``POST /agents/{id}/runs`` (queued) → the
worker leases it, the sandbox runs it → ``succeeded``, timed from the request to the completion
the database recorded (``finished_at - created_at``). Alternating, in one process:

* ``builtin``: the same project's graph run the way a built-in agent's is, its code already on the
  runner's disk (the worker's executor is given the project folder, no package digest);
* ``package warm``: the published package, already installed on the runner (the cache hit);
* ``package cold`` (``--cold`` samples): the package's installed folder removed first, so the run
  fetches it by digest from the control plane, verifies and installs it.

Prints medians (and p90) and the warm overhead per run (``package warm - builtin``); the target is
at most 250 ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(1, str(ROOT / "tests"))  # support.wsgi, support.wait

# ruff: noqa: E402 - the imports follow the sys.path fix
import argparse
import contextlib
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
from dataclasses import replace
from typing import Any

from support.wait import wait_until
from support.wsgi import serve_wsgi

from functions.agent_cli import build_package
from functions.gateway import create_gateway
from runtime.client import DataPlaneClient
from runtime.executor import Outcome, RunSpec
from runtime.sandbox import SandboxExecutor, SandboxOptions
from runtime.worker import Worker, WorkerOptions
from shared.composition import build_container
from shared.kernel.settings import Settings


class Http:
    def __init__(self, app: Any, token: str) -> None:
        self.client, self.token = app.test_client(), token

    def call(self, method: str, path: str, body: Any = None, *, data: bytes | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            resp = self.client.open(path, method=method, data=data,
                                    headers={**headers, "Content-Type": "application/gzip"})
        else:
            resp = self.client.open(path, method=method, json=body, headers=headers)
        assert resp.status_code < 300, (path, resp.status_code, resp.get_data(as_text=True))
        return resp.get_json()


class SwitchableExecutor:
    """The worker's executor: runs the bench's agent as a built-in (from the project folder) or as
    its package, as ``mode`` says."""

    def __init__(self, sandbox: SandboxExecutor, project: Path) -> None:
        self.sandbox, self.project, self.mode = sandbox, project, "package"

    def execute(self, spec: RunSpec, **kwargs: Any) -> Outcome:
        if self.mode == "builtin":
            return self.sandbox.execute(replace(spec, package_digest=None), package_dir=self.project, **kwargs)
        return self.sandbox.execute(spec, **kwargs)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="runs of builtin and of package warm each")
    parser.add_argument("--cold", type=int, default=8, help="cold package runs")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="bench-agent-package-"))
    base.chmod(0o755)
    settings = Settings(mode="local", data_dir=base / "data", public_url="http://127.0.0.1", database_url=None,
                        rate_limit_principal=0, rate_limit_dataplane=0, rate_limit_anonymous=0, log_level="WARNING")
    container = build_container(settings)
    app = create_gateway(container)
    serving = contextlib.ExitStack()
    url = serving.enter_context(serve_wsgi(app, log_requests=False))
    stop = threading.Event()
    try:
        project = base / "bench-echo"
        subprocess.run([sys.executable, "-m", "functions.cli", "agent", "init", str(project)], check=True,
                       capture_output=True, cwd=ROOT)
        manifest_yaml = (project / "manifest.yaml").read_text()
        package = build_package(project, "bench-echo", "0.1.0")
        dev = Http(app, container.identity.dev_grant("bench-dev@example.com").access_token)
        admin = Http(app, container.identity.dev_grant("bench-admin@example.com", platform_admin=True).access_token)
        org_id = dev.call("POST", "/orgs", {"name": "Bench"})["id"]
        agent_id = dev.call("POST", "/agents", {"org_id": org_id, "manifest_yaml": manifest_yaml})["listing"]["id"]
        uploaded = dev.call("PUT", f"/agents/{agent_id}/versions/0.1.0/package", data=package.data)
        admin.call("POST", f"/admin/agents/{agent_id}/approve", {"version": "0.1.0"})
        dep = dev.call("POST", f"/orgs/{org_id}/install", {"agent_id": agent_id, "config": {}})
        key = json.loads((settings.dataplanes_dir / f"{dep['id']}.json").read_text())["api_key"]
        client = DataPlaneClient(url, key)
        sandbox = SandboxExecutor(SandboxOptions(root=base / "sandbox"), fetch_package=client.fetch_package)
        executor = SwitchableExecutor(sandbox, project)
        worker = Worker(client, options=WorkerOptions(lease_seconds=30, poll_wait=5.0, drain_seconds=5),
                        executor=executor)  # type: ignore[arg-type]
        threading.Thread(target=worker.serve, args=(stop,), daemon=True).start()
        wait_until(lambda: worker.registration is not None, timeout=60, interval=0.01, what="the worker's registration")
        inputs = json.loads((project / "sample-input.json").read_text())
        installed = base / "sandbox" / "packages" / uploaded["sha256"]

        def one(mode: str) -> float:
            executor.mode = mode
            if mode == "cold":
                executor.mode = "package"
                shutil.rmtree(installed, ignore_errors=True)
            run = dev.call("POST", f"/agents/{agent_id}/runs", {"deployment_id": dep["id"], "inputs": inputs})

            def finished() -> dict[str, Any] | None:
                got: dict[str, Any] = dev.call("GET", f"/agents/{agent_id}/runs/{run['id']}")
                return got if got["status"] in ("succeeded", "failed", "dead", "cancelled") else None

            got = wait_until(finished, timeout=120, interval=0.002, what=f"{mode} run {run['id']} to finish")
            if got["status"] != "succeeded":
                raise SystemExit(f"{mode} run {run['id']} {got['status']}: {got.get('error')}")
            with container.db.read() as tx:
                row = tx.fetch_one("SELECT created_at, finished_at FROM runs WHERE id = %s", run["id"])
            assert row is not None
            return float((row["finished_at"] - row["created_at"]).total_seconds() * 1000)

        one("package")  # the first install and the zygote's start are not what is measured
        one("builtin")
        times: dict[str, list[float]] = {"builtin": [], "package warm": [], "package cold": []}
        for i in range(args.runs):
            times["builtin"].append(one("builtin"))
            times["package warm"].append(one("package"))
            if i < args.cold:
                times["package cold"].append(one("cold"))
        print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
              f"{len(__import__('os').sched_getaffinity(0))} cores")
        for name, values in times.items():
            print(f"{name:>13}: {len(values):3d} runs, queued -> succeeded median {statistics.median(values):7.1f} ms, "
                  f"p90 {pct(values, 0.9):7.1f} ms")
        warm = statistics.median(times["package warm"]) - statistics.median(times["builtin"])
        cold = statistics.median(times["package cold"]) - statistics.median(times["builtin"])
        print(f"overhead per run of a package over the same graph built in: warm {warm:+.1f} ms "
              f"(target <= 250 ms), cold {cold:+.1f} ms")
        sandbox.close()
    finally:
        stop.set()
        serving.close()
        container.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
