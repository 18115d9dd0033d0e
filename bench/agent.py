"""The built-in cost-anomaly agent on a large FOCUS export, against just reading the CSV.

    .venv/bin/python bench/agent.py [--rows 100000] [--rounds 5]

Generates ``--rows`` FOCUS 1.0 rows with ``agents/cost-anomaly/tests/focus_gen.py`` (a spike and a
new service injected), then, alternating, each in a fresh process so that peak memory is the
process's own:

* ``csv``: ``csv.reader`` over the file, every row visited (the floor any FOCUS reader pays);
* ``agent``: the real executor (``runtime.executor.Executor``) runs the agent's LangGraph graph with
  an in-process context (``MemoryRunLog``, no control plane), exactly as a worker does minus HTTP;
* ``agent+checkpoints``: the same with every step checkpointed to an in-process store, i.e. the
  serialisation a worker pays to make a run resumable.

Reports medians of wall time, CPU time and peak RSS (``resource.getrusage``), the RSS before the
work started (interpreter + imports), the growth during the work, and ratios against ``csv``
(``csv`` streams, so its peak is little more than the interpreter's).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder heads sys.path: put the repo root there instead.
ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agents" / "cost-anomaly"  # the built-in agent's project (its package, generator)
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

# ruff: noqa: E402 - the imports below must come after the sys.path fix
import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from typing import Any

KINDS = ("csv", "agent", "agent+checkpoints")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(kind: str, path: Path) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    if kind == "csv":
        import csv

        before = _rss_mb()
        wall, cpu = time.perf_counter(), time.process_time()
        rows = 0
        with path.open(newline="", encoding="utf-8") as handle:
            for _ in csv.reader(handle):
                rows += 1
        return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "rss_before_mb": before,
                "rss_peak_mb": _rss_mb(), "records": rows - 1}
    import yaml

    from runtime.checkpointer import MemoryCheckpointStore
    from runtime.executor import Executor, MemoryRunLog, RunSpec

    manifest = yaml.safe_load((AGENT / "manifest.yaml").read_text())
    spec = RunSpec(run_id="run_bench", manifest=manifest, config={"billing_source": str(path)}, inputs={},
                   granted_permissions=manifest["permissions"])
    executor = Executor()
    import cost_anomaly.graph  # noqa: F401 - imports belong to the baseline, not the run

    before = _rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = executor.execute(spec, log=MemoryRunLog(),
                               checkpoints=MemoryCheckpointStore() if kind == "agent+checkpoints" else None)
    elapsed, used = time.perf_counter() - wall, time.process_time() - cpu
    if outcome.status != "succeeded" or outcome.outputs is None:
        raise RuntimeError(f"the run {outcome.status}: {outcome.error}")
    return {"wall_s": elapsed, "cpu_s": used, "rss_before_mb": before, "rss_peak_mb": _rss_mb(),
            "records": int(outcome.metrics["records_processed"]), "anomalies": len(outcome.outputs["anomalies"]),
            "recommendations": len(outcome.outputs["recommendations"])}


def measure(kind: str, path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(AGENT)])}
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--file", str(path)], capture_output=True,
                         text=True, check=True, cwd=ROOT, env=env)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help="an existing FOCUS CSV instead of a generated one")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.file)))
        return
    with tempfile.TemporaryDirectory(prefix="marketplace-bench-agent-") as tmp:
        path = args.file or Path(tmp) / "focus.csv"
        if args.file is None:
            subprocess.run([sys.executable, str(AGENT / "tests" / "focus_gen.py"), "--rows", str(args.rows), "--out",
                            str(path), "--seed", "7", "--spike", "2024-09-17:6", "--new-service", "2024-09-24:400"],
                           check=True, capture_output=True)
        size_mb = path.stat().st_size / 1e6
        results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for _ in range(args.rounds):
            for kind in KINDS:
                results[kind].append(measure(kind, path))
    med = {kind: {m: statistics.median(r[m] for r in rs) for m in ("wall_s", "cpu_s", "rss_before_mb", "rss_peak_mb")}
           for kind, rs in results.items()}
    agent = results["agent"][0]
    print(f"{agent['records']} FOCUS rows ({size_mb:.1f} MB), {args.rounds} rounds, medians; "
          f"found {agent['anomalies']} anomalies, {agent['recommendations']} recommendations; "
          f"machine: {os.cpu_count()} cores")
    print(f"{'':<20}{'wall s':>9}{'CPU s':>9}{'RSS before MB':>15}{'peak RSS MB':>13}{'growth MB':>11}"
          f"{'wall x csv':>12}{'peak x csv':>12}")
    base = med["csv"]
    for kind in KINDS:
        m = med[kind]
        growth = m["rss_peak_mb"] - m["rss_before_mb"]
        print(f"{kind:<20}{m['wall_s']:>9.2f}{m['cpu_s']:>9.2f}{m['rss_before_mb']:>15.0f}{m['rss_peak_mb']:>13.0f}"
              f"{growth:>11.0f}{m['wall_s'] / base['wall_s']:>12.1f}{m['rss_peak_mb'] / base['rss_peak_mb']:>12.1f}")


if __name__ == "__main__":
    main()
