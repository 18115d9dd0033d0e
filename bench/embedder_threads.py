"""The MiniLM embedder with one BLAS thread against the BLAS default, alone and with processes
side by side (what ``marketplace up`` runs: several HTTP/worker processes on few cores).

    python -m bench.embedder_threads [--procs 1,2] [--repeat 3]

For each (BLAS threads, concurrent processes) it starts that many fresh interpreters with
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` set (or unset: the library's default, one thread per
core), each timing ``embed`` of one short query (200 times) and of a batch of 32 document-sized
texts (10 times), and prints the medians over the processes' median latencies as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, time
from shared.memory.adapters.minilm_embedder import MiniLmEmbedder
e = MiniLmEmbedder()
e.embed(["warm up"])
q = []
for i in range(200):
    t = time.perf_counter()
    e.embed([f"why did BigQuery spend rise in project p{i % 7}?"])
    q.append(time.perf_counter() - t)
docs = [f"run {i}: BigQuery spend rose {i}% after a schema change in project p{i % 7}; " * 6 for i in range(32)]
b = []
for _ in range(10):
    t = time.perf_counter()
    e.embed(docs)
    b.append(time.perf_counter() - t)
print(json.dumps({"query_ms": 1000 * statistics.median(q), "batch32_ms": 1000 * statistics.median(b)}))
"""

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run(threads: str | None, procs: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    if threads is not None:
        env.update(dict.fromkeys(VARIABLES, threads))
    children = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE)
                for _ in range(procs)]
    results = [json.loads(child.communicate()[0]) for child in children]
    return {key: statistics.median(r[key] for r in results) for key in ("query_ms", "batch32_ms")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = {}
    for procs in (int(p) for p in args.procs.split(",")):
        for threads in ("1", None):
            runs = [run(threads, procs) for _ in range(args.repeat)]
            out[f"{procs} process(es), BLAS threads {threads or 'default'}"] = {
                key: round(statistics.median(r[key] for r in runs), 1) for key in ("query_ms", "batch32_ms")}
    print(json.dumps({"nproc": os.cpu_count(), **out}, indent=2))


if __name__ == "__main__":
    main()
