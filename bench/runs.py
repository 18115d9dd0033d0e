"""Runs per second through the API: create a run, lease its task, complete it — over HTTP.

    .venv/bin/python bench/runs.py [--seconds 8] [--concurrency 8] [--rounds 3]
                                   [--http-workers N] [--threads N]

The platform runs as ``marketplace up --workers 0`` serves it (granian, access log on) on a fresh
embedded PostgreSQL. The built-in cost-anomaly agent is installed once; its data plane registers
with the deployment's key. Then ``concurrency`` client
threads loop for ``seconds``, each iteration one full run life cycle through the public API:

    POST /agents/{id}/runs            (user token: run + task in one transaction, audited)
    GET  /tasks/next?wait=0           (data-plane key: lease, run -> running)
    POST /agents/{id}/runs/{run}/complete   (data-plane key: outcome recorded once, audited)

No agent executes (that is bench/agent.py): this measures the control plane's per-run cost.
Prints medians over the rounds: completed runs per second, the p50/p99 of one life cycle, and
the CPU each side spent per run (the platform's processes, PostgreSQL's, the load generator's).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder heads sys.path: put the repo root there instead.
ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

# ruff: noqa: E402 - the imports below must come after the sys.path fix
import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Any
from urllib.parse import urlsplit

TARGET_RUNS_PER_SECOND = 300


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants that are not PostgreSQL (counted on their own)."""
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{current}/task/{current}/children").read_text().split():
                if Path(f"/proc/{child}/comm").read_text().strip() != "postgres":
                    frontier.append(int(child))
    return found


class Api:
    """One keep-alive HTTP/1.1 connection, spoken directly on a socket.

    The load generator shares the machine's cores with the platform, so it should cost as little
    as it can: ``http.client`` parses every response's headers with the email package, which
    costs the load generator about as much as a request costs the server's routing.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        self.sock.sendall(head.encode() + payload)
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not expected here")
        while len(self.buffer) < length:
            self._receive()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, json.loads(data) if data else None

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk


def setup(port: int, data_dir: Path) -> dict[str, str]:
    """An org, the built-in agent installed and its data plane registered."""
    token = subprocess.run([str(Path(sys.executable).parent / "marketplace"), "token", "--email",
                            "bench@example.com", "--data-dir", str(data_dir)], capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1]
    api = Api(port)
    _, org = api.call("POST", "/orgs", token, {"name": "Bench"})
    _, agent = api.call("GET", "/agents/cost-anomaly-detector", token)
    agent_id = agent["listing"]["id"]
    status, dep = api.call("POST", f"/orgs/{org['id']}/install", token, {
        "agent_id": agent_id, "config": {"billing_source": "bench.csv"}})
    assert status == 201, dep
    key = json.loads((data_dir / "dataplanes" / f"{dep['id']}.json").read_text())["api_key"]
    status, reg = api.call("POST", "/dataplanes/register", key, {"version": "bench", "hostname": "bench"})
    assert status == 200, reg
    return {"token": token, "key": key, "agent_id": agent_id, "deployment_id": dep["id"]}


def load(port: int, ids: dict[str, str], *, seconds: float, concurrency: int) -> dict[str, float]:
    """Closed loop: each thread runs full life cycles back to back."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = time.perf_counter() + seconds
    agent, token, key = ids["agent_id"], ids["token"], ids["key"]
    metrics = {"records_processed": 0, "cpu_seconds": 0.0}
    first_error: list[tuple[int, Any]] = []

    def worker(i: int) -> None:
        api = Api(port)
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status, _ = api.call("POST", f"/agents/{agent}/runs", token, {"deployment_id": ids["deployment_id"]})
            if status != 201:
                errors[i] += 1
                first_error.append((status, _))
                continue
            status, task = api.call("GET", "/tasks/next?wait=0&lease_seconds=60", key)
            if status != 200:  # another thread leased it first; it completes that one
                errors[i] += status != 204
                continue
            status, _ = api.call("POST", f"/agents/{agent}/runs/{task['run_id']}/complete", key, {
                "task_id": task["task_id"], "lease_token": task["lease_token"], "status": "succeeded",
                "outputs": {"ok": True}, "metrics": metrics})
            if status != 200:
                errors[i] += 1
                first_error.append((status, _))
                continue
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = sorted(x for per in latencies for x in per)
    if not flat:
        raise RuntimeError(f"no run completed; first error: {first_error[:1]}")
    return {"runs_per_s": len(flat) / elapsed, "p50_ms": flat[len(flat) // 2] * 1000,
            "p99_ms": flat[int(len(flat) * 0.99)] * 1000, "runs": len(flat), "errors": sum(errors)}


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (Linux ``/proc``)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile (a PostgreSQL backend of a closed connection)
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _postgres_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
    return found


def measured(port: int, ids: dict[str, str], server_pid: int, *, seconds: float, concurrency: int
             ) -> dict[str, float]:
    """One round of ``load`` with the CPU each side spent per completed run."""
    pg = _postgres_pids()
    server = _tree(server_pid)
    before = (_cpu_seconds(server), _cpu_seconds(pg), time.process_time())
    result = load(port, ids, seconds=seconds, concurrency=concurrency)
    after = (_cpu_seconds(server), _cpu_seconds(pg), time.process_time())
    runs = result["runs"]
    result.update({"gateway_cpu_ms": (after[0] - before[0]) * 1000 / runs,
                   "postgres_cpu_ms": (after[1] - before[1]) * 1000 / runs,
                   "client_cpu_ms": (after[2] - before[2]) * 1000 / runs})
    return result


def steady(data_dir: Path) -> None:
    """Analyze the tables a run touches, as autovacuum does within its first minute.

    A fresh database has no statistics: the plans the platform's connections cache in the
    first seconds are made for empty tables (a sequential scan of ``tasks`` for a claim) and
    last until autovacuum's first ANALYZE (``autovacuum_naptime``, one minute) invalidates them.
    The rounds measure the platform after that, not its first minute.
    """
    import psycopg

    from shared.kernel.adapters.embedded_pg import EmbeddedPostgres

    info = EmbeddedPostgres(data_dir).running()
    assert info is not None
    with psycopg.connect(info.url("marketplace"), autocommit=True) as conn:
        conn.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="the API's port (default: a free one)")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--http-workers", type=int, help="server processes (default: as marketplace up)")
    parser.add_argument("--threads", type=int, help="threads per server process (default: as marketplace up)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="marketplace-bench-runs-"))
    base.chmod(0o755)  # as root, PostgreSQL's service user must reach the data directory
    data_dir = base / "data"
    # The platform as ``marketplace up`` serves it, with no local workers: the load generator
    # plays the data plane.
    command = [str(Path(sys.executable).parent / "marketplace"), "up", "--port", str(args.port),
               "--data-dir", str(data_dir), "--workers", "0"]
    if args.http_workers:
        command += ["--http-workers", str(args.http_workers)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        serving = ""
        port: int | None = None
        for line in proc.stdout:
            if line.startswith("serving the API"):
                serving = line.split(" with ", 1)[1].split(" (")[0]
            if line.startswith("READY"):
                port = urlsplit(line.split()[1]).port  # "READY http://127.0.0.1:PORT": --port 0 picks one
                break
        if port is None:
            raise RuntimeError("the platform did not start")
        ids = setup(port, data_dir)
        load(port, ids, seconds=2, concurrency=args.concurrency)  # warm-up: connections, prepared statements
        steady(data_dir)
        rounds = [measured(port, ids, proc.pid, seconds=args.seconds, concurrency=args.concurrency)
                  for _ in range(args.rounds)]
        med = {m: statistics.median(r[m] for r in rounds)
               for m in ("runs_per_s", "p50_ms", "p99_ms", "gateway_cpu_ms", "postgres_cpu_ms", "client_cpu_ms")}
        print(f"full runs through the API (create -> lease -> complete), concurrency {args.concurrency}, "
              f"{args.rounds} rounds x {args.seconds:.0f}s, medians; {serving}; machine: {os.cpu_count()} cores")
        print(f"{'runs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'runs':>10}{'errors':>8}")
        print(f"{med['runs_per_s']:>10.0f}{med['p50_ms']:>10.1f}{med['p99_ms']:>10.1f}"
              f"{sum(r['runs'] for r in rounds):>10.0f}{sum(r['errors'] for r in rounds):>8.0f}")
        print(f"CPU per run: gateway {med['gateway_cpu_ms']:.1f} ms, PostgreSQL {med['postgres_cpu_ms']:.1f} ms, "
              f"load generator {med['client_cpu_ms']:.1f} ms")
        per_round = ", ".join(f"{r['runs_per_s']:.0f}" for r in rounds)
        print(f"per round runs/s: {per_round} (target >= {TARGET_RUNS_PER_SECOND})")
        per_round = ", ".join(f"{r['gateway_cpu_ms'] + r['postgres_cpu_ms'] + r['client_cpu_ms']:.1f}" for r in rounds)
        print(f"per round CPU ms per run (all three): {per_round}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        from shared.kernel.adapters.embedded_pg import EmbeddedPostgres

        EmbeddedPostgres(data_dir).stop(force=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
