"""Memory (issue 17): our pgvector store against LangGraph's ``PostgresStore``, side by side.

    python -m bench.memory [--n 100000] [--orgs 20] [--queries 300]

One embedded PostgreSQL (started here, in a temporary directory), two databases: ours (the
``memories`` table of 0014/0016: halfvec vectors, an exact scan per org below 20,000 memories and a
partial HNSW index per larger org, row-level security, TTL in the query) and
LangGraph's (``PostgresStore`` with its vector index on, ``ann_index_config`` HNSW, cosine). Both
get the SAME 384-d vectors: clustered synthetic unit vectors (embedding 100k texts on a CPU would
measure the embedder, not the stores), ``n`` memories spread over ``orgs`` orgs (a LangGraph
namespace per org). Figures, in one run:

* writes per second with the index (batches of 500; LangGraph through ``store.batch`` of PutOps);
* search p50/p99 (k = 10, within one org) and recall@10 against exact (numpy) neighbours;
* a full five-level context build p95 (``MemoryService.build_context``: real MiniLM query embedding,
  L2/L3/L4 searches, L5 preferences, budget) on our store.

Record the output in docs/BENCHMARKS.md (machine, whether it was quiet).
"""

from __future__ import annotations

import os

# One BLAS thread: a query is a few dozen tokens, and a multi-threaded BLAS spends longer waking its
# threads than multiplying (18 ms against 100-200 ms per query embedding on a loaded 2-core machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psycopg

from shared.kernel.adapters.embedded_pg import EmbeddedPostgres
from shared.kernel.db.database import Database, connect_url
from shared.kernel.db.migrate import apply_migrations
from shared.kernel.ids import new_id
from shared.memory import Level, Memory, MemoryService
from shared.memory.adapters.minilm_embedder import MiniLmEmbedder
from shared.memory.adapters.pgvector_store import PgVectorStore

DIM = 384
K = 10
BATCH = 500
EMB = "minilm-l6-v2"


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def vectors(n: int, seed: int = 17) -> np.ndarray:
    """Clustered unit vectors (200 topics, spread like sentence embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, DIM)).astype(np.float32)
    data = centres[rng.integers(0, 200, n)] + 0.9 * rng.standard_normal((n, DIM)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def _database(server: Any, name: str) -> str:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return str(server.url(name))


def _orgs(db: Database, count: int) -> list[str]:
    orgs = [new_id("org") for _ in range(count)]
    user = new_id("usr")
    with db.transaction() as tx:
        tx.execute("INSERT INTO users (id, email) VALUES (%s, %s)", user, f"{user}@bench.example")
        for org in orgs:
            tx.execute("INSERT INTO orgs (id, name, created_by) VALUES (%s, %s, %s)", org, "bench", user)
    return orgs


def bench_ours(url: str, data: np.ndarray, owner: np.ndarray, orgs: list[str], queries: np.ndarray,
               query_org: np.ndarray, truth: list[list[int]]) -> dict[str, float]:
    db = Database(connect_url(url, application_name="bench-memory"), size=4)
    apply_migrations(db)
    store = PgVectorStore(db)
    orgs_real = _orgs(db, len(orgs))
    now = datetime.now(UTC)
    ids = [new_id("mem") for _ in range(len(data))]
    started = time.perf_counter()
    for org_index, org in enumerate(orgs_real):
        rows = np.flatnonzero(owner == org_index)
        for start in range(0, len(rows), BATCH):
            chunk = rows[start:start + BATCH]
            store.add([Memory(id=ids[i], org_id=org, level=Level.SUMMARY, content=f"doc-{i}", embedder=EMB,
                              created_at=now, expires_at=now + timedelta(days=30)) for i in chunk],
                      [data[i].tolist() for i in chunk])
    writes = len(data) / (time.perf_counter() - started)
    index_of = {mid: i for i, mid in enumerate(ids)}
    latencies, recalls = [], []
    for q, org_index, expected in zip(queries, query_org, truth, strict=True):
        t = time.perf_counter()
        hits = store.search(orgs_real[org_index], level=Level.SUMMARY, vector=q.tolist(), k=K, now=now, embedder=EMB)
        latencies.append(time.perf_counter() - t)
        recalls.append(len({index_of[h.id] for h in hits} & set(expected)) / K)
    context = _context_p95(db, store, orgs_real[0])
    db.close()
    return {"writes_per_s": writes, "search_p50_ms": 1000 * statistics.median(latencies),
            "search_p99_ms": 1000 * _pct(latencies, 99), "recall_at_10": statistics.mean(recalls),
            "context_p95_ms": context}


def _context_p95(db: Database, store: PgVectorStore, org: str) -> float:
    from shared.audit import AuditLog

    embedder = MiniLmEmbedder()
    service = MemoryService(db, store, embedder, AuditLog(db),
                            preferences=lambda _org: {"cost_anomaly": {"sensitivity": 4}})
    texts = [f"run {i}: BigQuery spend rose {i}% after a schema change in project p{i % 7}" for i in range(60)]
    from shared.memory import NewMemory

    service.remember(org, [NewMemory(level=Level.EPISODE, content=t) for t in texts[:30]])
    service.add_knowledge(org, "cost_anomalies", [" ".join(texts[30:])], actor="bench")
    embedder.embed(["warm up"])
    times = []
    for i in range(50):
        t = time.perf_counter()
        service.build_context(org, query=f"why did BigQuery spend rise in project p{i % 7}?",
                              levels=[1, 2, 3, 4, 5], namespaces=["cost_anomalies"], session="step 3 of 5")
        times.append(time.perf_counter() - t)
    return 1000 * _pct(times, 95)


def bench_langgraph(url: str, data: np.ndarray, owner: np.ndarray, orgs: list[str], queries: np.ndarray,
                    query_org: np.ndarray, truth: list[list[int]]) -> dict[str, float]:
    from langgraph.store.base import PutOp
    from langgraph.store.postgres import PostgresStore

    lookup = {f"doc-{i}": data[i].tolist() for i in range(len(data))}
    lookup.update({f"query-{j}": q.tolist() for j, q in enumerate(queries)})

    def embed(texts: list[str]) -> list[list[float]]:
        return [lookup[t] for t in texts]

    index = {"dims": DIM, "embed": embed, "fields": ["text"],
             "ann_index_config": {"kind": "hnsw", "vector_type": "vector"}, "distance_type": "cosine"}
    with PostgresStore.from_conn_string(url, index=index) as store:  # type: ignore[arg-type]
        store.setup()
        started = time.perf_counter()
        for org_index, org in enumerate(orgs):
            rows = np.flatnonzero(owner == org_index)
            for start in range(0, len(rows), BATCH):
                store.batch([PutOp(("org", org), f"m{i}", {"text": f"doc-{i}"}) for i in rows[start:start + BATCH]])
        writes = len(data) / (time.perf_counter() - started)
        latencies, recalls = [], []
        for j, (org_index, expected) in enumerate(zip(query_org, truth, strict=True)):
            t = time.perf_counter()
            hits = store.search(("org", orgs[org_index]), query=f"query-{j}", limit=K)
            latencies.append(time.perf_counter() - t)
            recalls.append(len({int(h.key[1:]) for h in hits} & set(expected)) / K)
    return {"writes_per_s": writes, "search_p50_ms": 1000 * statistics.median(latencies),
            "search_p99_ms": 1000 * _pct(latencies, 99), "recall_at_10": statistics.mean(recalls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    data = vectors(args.n)
    rng = np.random.default_rng(5)
    owner = rng.integers(0, args.orgs, args.n)
    queries = vectors(args.queries, seed=99)
    query_org = rng.integers(0, args.orgs, args.queries)
    truth = []
    for q, org in zip(queries, query_org, strict=True):
        rows = np.flatnonzero(owner == org)
        truth.append(rows[np.argsort(-(data[rows] @ q))[:K]].tolist())
    orgs = [f"org{i}" for i in range(args.orgs)]
    data_dir = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    data_dir.chmod(0o755)
    pg = EmbeddedPostgres(data_dir)
    try:
        server = pg.ensure_running()
        ours = bench_ours(_database(server, "bench_ours"), data, owner, orgs, queries, query_org, truth)
        theirs = bench_langgraph(_database(server, "bench_langgraph"), data, owner, orgs, queries, query_org, truth)
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)  # ~1.4 GB at 100k
    print(json.dumps({"n": args.n, "orgs": args.orgs, "queries": args.queries, "ours": ours, "langgraph": theirs,
                      "ratios": {"search_p99_ours_over_theirs": ours["search_p99_ms"] / theirs["search_p99_ms"],
                                 "writes_ours_over_theirs": ours["writes_per_s"] / theirs["writes_per_s"]}},
                     indent=2))


if __name__ == "__main__":
    main()
