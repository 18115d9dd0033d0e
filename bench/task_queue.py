"""Task queue benchmark: our ``PgTaskQueue`` against pgqueuer and procrastinate.

Everything runs against ONE embedded PostgreSQL (a temporary data directory), each queue in
its own database, in the same run and the same rounds, so the figures are comparable:

* drain (1 and 4 workers): N no-op tasks enqueued beforehand, then workers claim and complete
  them; tasks per second from the workers' start to the last completion.
* mixed (4 workers): one producer enqueues N tasks one at a time (one transaction each) while
  4 workers, already waiting, consume them; tasks per second until the last completion.
* latency: 4 idle workers wait; M tasks are enqueued one at a time, spaced out; latency is
  from just before the enqueue call to the moment a worker holds the task (p50, p99).

Ours runs its workers as threads (its API is synchronous), three ways:

* "ours": batches of 10 (``claim_batch(limit=10)``, then ``complete_many``), pgqueuer's
  default batch size, with the adapter's default asynchronous commit for claims and
  completions (see docs/QUEUE.md);
* "ours-1": one task at a time (``claim_next``, then ``complete``), as the runtime's workers
  claim runs;
* "ours-durable": batches of 10 with ``durable_acks=True``.

pgqueuer and procrastinate run as
their documented asyncio workers with their default settings (pgqueuer's default batch size
of 10, procrastinate's LISTEN/NOTIFY worker), "4 workers" meaning 4 pgqueuer QueueManagers on
4 connections, or one procrastinate worker with ``concurrency=4``. Each of the five runs in a
process of its own (what one library leaves running must not slow the next one down: procrastinate
did halve a later in-process run of ours), and before each case the run waits until no
autovacuum worker is busy.

The comparison libraries are NOT project dependencies; install them for the benchmark only:

    .venv/bin/pip install pgqueuer procrastinate "psycopg[binary]" asyncpg
    .venv/bin/python bench/task_queue.py --rounds 3

Prints one table of medians over the rounds, with ours/pgqueuer and ours/procrastinate ratios.
"""

# ruff: noqa: E402 - the imports below must come after the sys.path fix
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder heads sys.path: put the repo root there instead. (The file is
# not named queue.py: a script's folder heads sys.path, and it would shadow the standard library's
# queue, which asyncio and psycopg's pool import, for every bench.)
ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(1, str(ROOT / "tests"))  # support.wait

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from support.wait import wait_until

from shared.kernel.adapters.embedded_pg import EmbeddedPostgres, ServerInfo
from shared.kernel.db.database import Database, connect_url
from shared.kernel.db.migrate import apply_migrations
from shared.runs.adapters.pg_task_queue import PgTaskQueue

LEASE_SECONDS = 60
# pgqueuer's default batch size, for our batched workers too.
BATCH = 10


@dataclass
class Figures:
    """One round's results for one queue."""

    drain1: float = 0.0
    drain4: float = 0.0
    mixed4: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return _percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return _percentile(self.latencies, 99)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def _admin(server: ServerInfo, sql: str, database: str = "postgres") -> None:
    with psycopg.connect(server.url(database), autocommit=True) as conn:
        conn.execute(sql.encode())


def _settle(server: ServerInfo, limit: float = 30.0) -> None:
    """Wait (up to ``limit`` seconds) until no autovacuum worker runs: one queue's clean-up
    must not land in the middle of the next queue's case. After ``limit`` the case runs anyway."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        def no_autovacuum() -> bool:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
                               ).fetchone()
            return row is not None and row[0] == 0

        try:
            wait_until(no_autovacuum, timeout=limit, interval=0.1, what="no autovacuum worker to run")
        except AssertionError as exc:
            print(f"{exc}; running the case anyway", file=sys.stderr, flush=True)


def _create_database(server: ServerInfo, name: str) -> str:
    _admin(server, f'DROP DATABASE IF EXISTS "{name}"')
    _admin(server, f'CREATE DATABASE "{name}"')
    return server.url(name)


# -- ours --------------------------------------------------------------------------------------------
class Ours:
    """``PgTaskQueue`` with worker threads (``durable_acks``: every acknowledgement waits for
    the WAL flush, the adapter's option; by default only enqueues do)."""

    def __init__(self, server: ServerInfo, *, batch: int, durable_acks: bool = False) -> None:
        self.server = server
        self.batch = batch
        self.database = f"bench_ours_{batch}" + ("_durable" if durable_acks else "")
        _create_database(server, self.database)

        connect = connect_url(server.url(self.database), application_name="bench-ours")

        self.db = Database(connect, size=12)
        apply_migrations(self.db)
        self.queue = PgTaskQueue(self.db, listen_connect=connect, durable_acks=durable_acks)

    def reset(self) -> None:
        with self.db.transaction() as tx:
            tx.execute("TRUNCATE tasks")
        _admin(self.server, "VACUUM ANALYZE tasks", self.database)

    def _enqueue_batch(self, n: int) -> None:
        with self.db.transaction() as tx:
            for i in range(n):
                self.queue.enqueue(tx, kind="noop", payload={"i": i}, run_id=None, org_id="org_bench",
                                   deployment_id=None)

    def _workers(self, count: int, wait: float, on_task: Callable[[Any], None] | None,
                 stop: threading.Event) -> list[threading.Thread]:
        def work_one_at_a_time(n: int) -> None:
            while not stop.is_set():
                task = self.queue.claim_next(deployment_id=None, worker_id=f"w{n}", lease_seconds=LEASE_SECONDS,
                                             wait_seconds=wait)
                if task is None:
                    if wait == 0:
                        return
                    continue
                if on_task is not None:
                    on_task(task)
                self.queue.complete(task.id, task.lease_token)

        def work_in_batches(n: int) -> None:
            while not stop.is_set():
                tasks = self.queue.claim_batch(deployment_id=None, worker_id=f"w{n}", lease_seconds=LEASE_SECONDS,
                                               wait_seconds=wait, limit=self.batch)
                if not tasks:
                    if wait == 0:
                        return
                    continue
                for task in tasks:
                    if on_task is not None:
                        on_task(task)
                self.queue.complete_many([(task.id, task.lease_token) for task in tasks])

        work = work_in_batches if self.batch > 1 else work_one_at_a_time

        threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(count)]
        for t in threads:
            t.start()
        return threads

    def drain(self, n: int, workers: int) -> float:
        self.reset()
        self._enqueue_batch(n)
        stop = threading.Event()
        started = time.perf_counter()
        for t in self._workers(workers, 0.0, None, stop):
            t.join()
        elapsed = time.perf_counter() - started
        with self.db.transaction() as tx:
            assert tx.fetch_val("SELECT count(*) FROM tasks WHERE state = 'done'") == n
        return n / elapsed

    def mixed(self, n: int, workers: int) -> float:
        self.reset()
        done = threading.Semaphore(0)
        stop = threading.Event()
        threads = self._workers(workers, 1.0, lambda _t: done.release(), stop)
        time.sleep(0.3)
        started = time.perf_counter()
        for i in range(n):
            self.queue.enqueue(None, kind="noop", payload={"i": i}, run_id=None, org_id="org_bench",
                               deployment_id=None)
        for _ in range(n):
            done.acquire()
        elapsed = time.perf_counter() - started
        stop.set()
        for t in threads:
            t.join()
        return n / elapsed

    def latency(self, m: int, pollers: int, spacing: float) -> list[float]:
        self.reset()
        sent: dict[int, float] = {}
        got: list[float] = []
        lock = threading.Lock()
        remaining = threading.Semaphore(0)

        def on_task(task: Any) -> None:
            now = time.perf_counter()
            with lock:
                got.append(now - sent[task.payload["i"]])
            remaining.release()

        stop = threading.Event()
        threads = self._workers(pollers, 5.0, on_task, stop)
        time.sleep(0.5)
        for i in range(m):
            sent[i] = time.perf_counter()
            self.queue.enqueue(None, kind="noop", payload={"i": i}, run_id=None, org_id="org_bench",
                               deployment_id=None)
            time.sleep(spacing)
        for _ in range(m):
            remaining.acquire()
        stop.set()
        for t in threads:
            t.join()
        return got

    def close(self) -> None:
        self.queue.close()
        self.db.close()


# -- pgqueuer ------------------------------------------------------------------------------------------
class PgQueuerBench:
    """pgqueuer QueueManagers (asyncpg), default batch size."""

    name = "pgqueuer"

    def __init__(self, server: ServerInfo) -> None:
        self.server = server
        self.dsn = _create_database(server, "bench_pgqueuer")
        asyncio.run(self._install())

    async def _install(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(self.dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    def reset(self) -> None:
        _admin(self.server, "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics", "bench_pgqueuer")
        _admin(self.server, "VACUUM ANALYZE pgqueuer", "bench_pgqueuer")

    async def _managers(self, count: int, handler: Callable[[Any], None]) -> tuple[list[Any], list[Any]]:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries, QueueManager

        managers, conns = [], []
        for _ in range(count):
            conn = await asyncpg.connect(self.dsn)
            manager = QueueManager(Queries(AsyncpgDriver(conn)))

            @manager.entrypoint("noop")
            async def noop(job: Any) -> None:
                handler(job)

            managers.append(manager)
            conns.append(conn)
        return managers, conns

    async def _run(self, n: int, workers: int, *, produce: Callable[[Any], Any] | None,
                   pre_enqueue: bool, on_job: Callable[[Any], None] | None = None) -> float:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        producer_conn = await asyncpg.connect(self.dsn)
        queries = Queries(AsyncpgDriver(producer_conn))
        if pre_enqueue:
            await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
        finished = asyncio.Event()
        count = 0

        def handler(job: Any) -> None:
            nonlocal count
            if on_job is not None:
                on_job(job)
            count += 1
            if count == n:
                finished.set()

        managers, conns = await self._managers(workers, handler)
        started = time.perf_counter()
        runs = [asyncio.create_task(m.run()) for m in managers]
        if produce is not None:
            await asyncio.sleep(0.5)
            started = time.perf_counter()
            await produce(queries)
        await finished.wait()
        elapsed = time.perf_counter() - started
        for m in managers:
            m.shutdown.set()
        await asyncio.gather(*runs)
        for c in [*conns, producer_conn]:
            await c.close()
        return elapsed

    def drain(self, n: int, workers: int) -> float:
        self.reset()
        return n / asyncio.run(self._run(n, workers, produce=None, pre_enqueue=True))

    def mixed(self, n: int, workers: int) -> float:
        self.reset()

        async def produce(queries: Any) -> None:
            for _ in range(n):
                await queries.enqueue("noop", None)

        return n / asyncio.run(self._run(n, workers, produce=produce, pre_enqueue=False))

    def latency(self, m: int, pollers: int, spacing: float) -> list[float]:
        self.reset()
        sent: dict[int, float] = {}
        got: list[float] = []

        def on_job(job: Any) -> None:
            got.append(time.perf_counter() - sent[int(job.payload)])

        async def produce(queries: Any) -> None:
            for i in range(m):
                sent[i] = time.perf_counter()
                await queries.enqueue("noop", str(i).encode())
                await asyncio.sleep(spacing)

        asyncio.run(self._run(m, pollers, produce=produce, pre_enqueue=False, on_job=on_job))
        return got

    def close(self) -> None:
        pass


# -- procrastinate ---------------------------------------------------------------------------------------
class ProcrastinateBench:
    """A procrastinate worker (psycopg 3), default settings but for its concurrency."""

    name = "procrastinate"

    def __init__(self, server: ServerInfo) -> None:
        self.server = server
        self.dsn = _create_database(server, "bench_procrastinate")
        asyncio.run(self._install())

    def _app(self) -> Any:
        from procrastinate import App, PsycopgConnector

        return App(connector=PsycopgConnector(conninfo=self.dsn))

    async def _install(self) -> None:
        app = self._app()
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    def reset(self) -> None:
        _admin(self.server, "TRUNCATE procrastinate_jobs CASCADE", "bench_procrastinate")
        _admin(self.server, "VACUUM ANALYZE procrastinate_jobs", "bench_procrastinate")

    async def _run(self, n: int, workers: int, *, produce: Callable[[Any], Any] | None,
                   pre_enqueue: bool, on_job: Callable[[int], None] | None = None) -> float:
        app = self._app()
        finished = asyncio.Event()
        count = 0

        @app.task(name="noop", queue="bench")
        async def noop(i: int) -> None:
            nonlocal count
            if on_job is not None:
                on_job(i)
            count += 1
            if count == n:
                finished.set()

        async with app.open_async():
            if pre_enqueue:
                await noop.batch_defer_async(*({"i": i} for i in range(n)))
            started = time.perf_counter()
            worker = asyncio.create_task(app.run_worker_async(queues=["bench"], concurrency=workers,
                                                              install_signal_handlers=False))
            if produce is not None:
                await asyncio.sleep(0.5)
                started = time.perf_counter()
                await produce(noop)
            await finished.wait()
            elapsed = time.perf_counter() - started
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        return elapsed

    def drain(self, n: int, workers: int) -> float:
        self.reset()
        return n / asyncio.run(self._run(n, workers, produce=None, pre_enqueue=True))

    def mixed(self, n: int, workers: int) -> float:
        self.reset()

        async def produce(task: Any) -> None:
            for i in range(n):
                await task.defer_async(i=i)

        return n / asyncio.run(self._run(n, workers, produce=produce, pre_enqueue=False))

    def latency(self, m: int, pollers: int, spacing: float) -> list[float]:
        self.reset()
        sent: dict[int, float] = {}
        got: list[float] = []

        def on_job(i: int) -> None:
            got.append(time.perf_counter() - sent[i])

        async def produce(task: Any) -> None:
            for i in range(m):
                sent[i] = time.perf_counter()
                await task.defer_async(i=i)
                await asyncio.sleep(spacing)

        asyncio.run(self._run(m, pollers, produce=produce, pre_enqueue=False, on_job=on_job))
        return got

    def close(self) -> None:
        pass


# -- one process per queue ------------------------------------------------------------------------------
def _serve(conn: Any, kind: str, server: ServerInfo, options: dict[str, Any]) -> None:
    """Child process: build one bench and run the methods the parent asks for."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    bench = _BENCHES[kind](server, **options)
    conn.send("ready")
    while True:
        method, args = conn.recv()
        if method == "close":
            bench.close()
            conn.send(None)
            return
        conn.send(getattr(bench, method)(*args))


class Isolated:
    """A bench living in a process of its own: what one queue library leaves behind (threads,
    event loops, pools) cannot slow down the next one, and each has its own GIL."""

    def __init__(self, kind: str, server: ServerInfo, **options: Any) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, kind, server, options), daemon=True)
        self._process.start()
        if self._conn.recv() != "ready":
            raise RuntimeError(f"the {kind} bench did not start")

    def _call(self, method: str, *args: Any) -> Any:
        self._conn.send((method, args))
        return self._conn.recv()

    def drain(self, n: int, workers: int) -> float:
        return float(self._call("drain", n, workers))

    def mixed(self, n: int, workers: int) -> float:
        return float(self._call("mixed", n, workers))

    def latency(self, m: int, pollers: int, spacing: float) -> list[float]:
        return list(self._call("latency", m, pollers, spacing))

    def close(self) -> None:
        self._call("close")
        self._process.join(timeout=30)


_BENCHES: dict[str, Any] = {"ours": Ours, "pgqueuer": PgQueuerBench, "procrastinate": ProcrastinateBench}


# -- the run ---------------------------------------------------------------------------------------------
CASES: list[tuple[str, Callable[[Any, argparse.Namespace], Any]]] = [
    ("drain1", lambda bench, args: bench.drain(args.tasks, 1)),
    ("drain4", lambda bench, args: bench.drain(args.tasks, 4)),
    ("mixed4", lambda bench, args: bench.mixed(args.tasks, 4)),
    ("latencies", lambda bench, args: bench.latency(args.samples, 4, args.spacing)),
]


def _round(benches: dict[str, Any], server: ServerInfo, args: argparse.Namespace,
           number: int) -> dict[str, Figures]:
    """One round: each case runs for every queue back to back (the order rotating between
    rounds), so a burst of load from elsewhere on a shared machine hits them alike."""
    figures = {name: Figures() for name in benches}
    names = list(benches)
    shift = number % len(names)
    order = names[shift:] + names[:shift]
    for case, run in CASES:
        for name in order:
            _settle(server)
            setattr(figures[name], case, run(benches[name], args))
    return figures


def _table(results: dict[str, list[Figures]], only: list[str]) -> str:
    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(f, attr) for f in results[name])

    rows = [("drain, 1 worker (tasks/s)", "drain1", True), ("drain, 4 workers (tasks/s)", "drain4", True),
            ("mixed, 4 workers (tasks/s)", "mixed4", True), ("latency p50 (ms)", "p50", False),
            ("latency p99 (ms)", "p99", False)]
    names = [n for n in ("ours", "ours-1", "ours-durable", "pgqueuer", "procrastinate")
             if n in results and n in only]
    ours = [n for n in ("ours", "ours-1") if n in names]
    others = [n for n in names if not n.startswith("ours")]
    header = ["metric", *names, *(f"{o}/{n}" for o in ours for n in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, attr, higher_is_better in rows:
        scale = 1.0 if higher_is_better else 1000.0
        values = {n: med(n, attr) * scale for n in names}
        cells = [label, *(f"{values[n]:,.1f}" for n in names)]
        cells += [f"{values[o] / values[n]:.2f}x" for o in ours for n in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per throughput case")
    parser.add_argument("--samples", type=int, default=200, help="tasks in the latency case")
    parser.add_argument("--spacing", type=float, default=0.02, help="seconds between latency enqueues")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="ours,ours-1,ours-durable,pgqueuer,procrastinate")
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # procrastinate warns about an App built in __main__; that is what a benchmark does.
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    only = args.only.split(",")

    data_dir = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    data_dir.chmod(0o755)  # as root the server runs as an unprivileged user who must enter it
    pg = EmbeddedPostgres(data_dir)
    try:
        server = pg.ensure_running()
        benches: dict[str, Isolated] = {}
        if "ours" in only:
            benches["ours"] = Isolated("ours", server, batch=BATCH)
        if "ours-1" in only:
            benches["ours-1"] = Isolated("ours", server, batch=1)
        if "ours-durable" in only:
            benches["ours-durable"] = Isolated("ours", server, batch=BATCH, durable_acks=True)
        if "pgqueuer" in only:
            benches["pgqueuer"] = Isolated("pgqueuer", server)
        if "procrastinate" in only:
            benches["procrastinate"] = Isolated("procrastinate", server)
        results: dict[str, list[Figures]] = {name: [] for name in benches}
        for r in range(args.rounds):
            for name, figures in _round(benches, server, args, r).items():
                results[name].append(figures)
                print(f"round {r + 1} {name:14} drain1 {figures.drain1:8.0f}/s  drain4 {figures.drain4:8.0f}/s  "
                      f"mixed4 {figures.mixed4:8.0f}/s  p50 {figures.p50 * 1000:6.1f} ms  "
                      f"p99 {figures.p99 * 1000:6.1f} ms", flush=True)
        for bench in benches.values():
            bench.close()
        print()
        print(f"PostgreSQL {server.version} embedded; {os.cpu_count()} cores; Python {platform.python_version()}; "
              f"{args.tasks} tasks per throughput case, {args.samples} latency samples, "
              f"medians of {args.rounds} rounds")
        print(_table(results, only))
        if args.json:
            args.json.write_text(json.dumps({n: [f.__dict__ for f in fs] for n, fs in results.items()}, indent=1))
    finally:
        pg.stop(force=True)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
