"""API gateway throughput against a bare functions-framework hello-world, served the same way.

    .venv/bin/python bench/api.py [--seconds 10] [--concurrency 8] [--rounds 3]

Both apps run in their own process behind the same server (werkzeug's threaded WSGI server,
which answers ``Connection: close``: each request is a new connection and a new thread, the same
cost for both apps; the ratio compares the apps, not the server; ``marketplace up`` serves
with granian, measured by bench/runs.py). One load generator
process drives each in turn, alternating, for several rounds; the table quotes medians and
the ratio authenticated-GET / hello-world. It also prints the import time of one function
module over a bare ``import functions_framework``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder heads sys.path: put the repo root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(1, str(ROOT / "tests"))  # support.wsgi


def serve(kind: str, data_dir: str | None) -> None:
    """Child process: serve one app on a free port until killed; prints ``READY <url>``."""
    from support.wsgi import serve_wsgi

    if kind == "hello":
        src = Path(tempfile.mkdtemp()) / "main.py"
        src.write_text("def hello(request):\n    return {'hello': 'world'}\n")
        import functions_framework

        app = functions_framework.create_app(target="hello", source=str(src))
    else:
        from functions.gateway import create_gateway
        from shared.composition import build_container
        from shared.kernel.jsonlog import configure_logging
        from shared.kernel.settings import Settings

        configure_logging("INFO")  # the access log stays on, as in production (stderr is discarded)
        # One reader drives every round of two GET loads (tens of thousands of requests a minute):
        # a limit it never reaches, so that each request is answered, not refused with 429. The
        # limiter still counts every request.
        app = create_gateway(build_container(Settings(data_dir=Path(data_dir or "."),
                                                      rate_limit_principal=100_000_000)))
    with serve_wsgi(app, log_requests=False) as url:
        print(f"READY {url}", flush=True)
        threading.Event().wait()  # until the parent terminates this process


def _start(kind: str, procs: list[subprocess.Popen[str]], data_dir: str | None = None) -> int:
    """Start a child serving ``kind`` (added to ``procs``); returns the port it serves on."""
    args = [sys.executable, __file__, "--serve", kind]
    if data_dir:
        args += ["--data-dir", data_dir]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    procs.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        raise RuntimeError(f"{kind} server did not start: {line}")
    port = urlsplit(line.split()[1]).port
    assert port is not None
    return port


def load(port: int, method: str, path: str, *, seconds: float, concurrency: int,
         headers: dict[str, str], body_fn: Any = None) -> dict[str, float]:
    """Closed-loop load: ``concurrency`` keep-alive connections for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = 0
        while time.perf_counter() < stop_at:
            body = body_fn(i, n) if body_fn else None
            t0 = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            latencies[i].append(time.perf_counter() - t0)
            if resp.status >= 400:
                errors[i] += 1
            n += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = sorted(x for per in latencies for x in per)
    return {"rps": len(flat) / elapsed, "p50_ms": flat[len(flat) // 2] * 1000,
            "p99_ms": flat[int(len(flat) * 0.99)] * 1000, "requests": len(flat), "errors": sum(errors)}


def import_times(runs: int = 7) -> tuple[float, float]:
    """Median wall time of a fresh interpreter importing functions_framework, then + one function module."""
    def measure(stmt: str) -> float:
        code = f"import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
        return float(out.stdout.strip())
    bare = statistics.median(measure("import functions_framework") for _ in range(runs))
    ours = statistics.median(measure("import functions_framework, functions.orgs") for _ in range(runs))
    return bare * 1000, ours * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve")
    parser.add_argument("--data-dir")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.data_dir)
        return

    base = Path(tempfile.mkdtemp(prefix="marketplace-bench-"))
    base.chmod(0o755)
    data_dir = base / "data"
    procs: list[subprocess.Popen[str]] = []
    try:
        hello = _start("hello", procs)
        gateway = _start("gateway", procs, str(data_dir))
        def token(email: str) -> str:
            return subprocess.run([str(Path(sys.executable).parent / "marketplace"), "token", "--email", email,
                                   "--data-dir", str(data_dir)], capture_output=True, text=True,
                                  check=True).stdout.strip()
        # Separate users: the orgs created by the POST load would otherwise grow GET /me's answer.
        auth = {"Authorization": f"Bearer {token('reader@example.com')}"}
        json_auth = {"Authorization": f"Bearer {token('writer@example.com')}", "Content-Type": "application/json"}
        # The reader belongs to three orgs, as a user typically does: GET /me lists them.
        org_ids = []
        for n in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", gateway, timeout=30)
            conn.request("POST", "/orgs", body=json.dumps({"name": f"reader org {n}"}),
                         headers={**auth, "Content-Type": "application/json"})
            org_ids.append(json.loads(conn.getresponse().read())["id"])
            conn.close()
        results: dict[str, list[dict[str, float]]] = {"hello": [], "get_me": [], "get_org": [], "post_orgs": []}
        for _ in range(args.rounds):
            results["hello"].append(load(hello, "GET", "/", seconds=args.seconds, concurrency=args.concurrency,
                                         headers={}))
            results["get_me"].append(load(gateway, "GET", "/me", seconds=args.seconds,
                                          concurrency=args.concurrency, headers=auth))
            results["get_org"].append(load(gateway, "GET", f"/orgs/{org_ids[0]}", seconds=args.seconds,
                                           concurrency=args.concurrency, headers=auth))
            results["post_orgs"].append(load(
                gateway, "POST", "/orgs", seconds=args.seconds, concurrency=args.concurrency, headers=json_auth,
                body_fn=lambda i, n: json.dumps({"name": f"bench {i}-{n}"})))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_ms", "p99_ms")}
               for k, v in results.items()}
        errors = {k: sum(r["errors"] for r in v) for k, v in results.items()}
        print(f"concurrency {args.concurrency}, {args.rounds} rounds x {args.seconds:.0f}s each, "
              f"medians; machine: {os.cpu_count()} cores")
        print(f"{'endpoint':<32}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        for name, label in (("hello", "functions-framework hello-world"), ("get_me", "GET /me (authenticated)"),
                            ("get_org", "GET /orgs/{id} (org-scoped)"), ("post_orgs", "POST /orgs (authenticated)")):
            m = med[name]
            print(f"{label:<32}{m['rps']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}{errors[name]:>8}")
        ratio = med["get_me"]["rps"] / med["hello"]["rps"]
        print(f"ratio GET /me / hello-world req/s: {ratio:.2f} (target >= 0.5)")
        for name, label in (("get_org", "GET /orgs/{id}"), ("post_orgs", "POST /orgs")):
            print(f"ratio {label} / hello-world req/s: {med[name]['rps'] / med['hello']['rps']:.2f}")
        bare, ours = import_times()
        print(f"import functions_framework: {bare:.0f} ms; + functions.orgs: {ours:.0f} ms; "
              f"overhead {ours - bare:.0f} ms (target <= 300)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        from shared.kernel.adapters.embedded_pg import EmbeddedPostgres

        EmbeddedPostgres(data_dir).stop(force=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
