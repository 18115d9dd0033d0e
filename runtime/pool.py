"""The local worker pool behind ``marketplace up --workers N``.

In local mode a SaaS deployment's data plane is this pool: N worker processes, each serving every
deployment the local provisioner lists in ``<data_dir>/dataplanes/``. Each process runs one
``Worker`` thread per deployment — a deployment gets up to N runs at once — and looks at the folder
every ``refresh_seconds``, starting workers for new deployments and draining those of removed ones.
Workers talk to the control plane over HTTP with the deployment's key, exactly as a BYOC or Cloud
Run data plane does.

The folder's format is the one contract between the control plane's local provisioner
(``shared/deployments/adapters/local_provisioner.py``, which writes it) and this pool (which reads
it), the way a mounted secret is between an orchestrator and a container:

* one file per deployment, ``<deployment id>.json`` (deployment ids start with ``dep_``), written
  whole (a temporary file renamed into place) and readable by its owner only (mode 0600);
* a JSON object whose ``deployment_id`` and ``api_key`` (the deployment's data-plane key) the pool
  reads; its other members (org, agent, version, control-plane URL, config) the pool ignores;
* removing the file withdraws the deployment: its workers drain and stop.

The pool reads the files itself (``read_assignments``) rather than importing the provisioner, so
the data plane never imports the control plane; ``tests/unit/test_local_assignments.py`` checks
that what the provisioner writes is what the pool reads.

The parent (``WorkerPool``) starts the processes (``python -m runtime.pool``), restarts one that
dies, and stops them all with SIGTERM (drain), then SIGKILL after a timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.worker import Worker

_log = logging.getLogger("marketplace.pool")

#: The BLAS libraries' thread-count variables (OpenBLAS, OpenMP, MKL, Accelerate).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class Assignment:
    """A deployment the local workers serve, and its data-plane key."""

    deployment_id: str
    api_key: str = field(repr=False)


def source_paths() -> list[str]:
    """Where a source checkout of the platform keeps its packages: the repository root and the
    project folder of each built-in agent package (``agents/<name>/``). Empty when the platform is
    installed (then they are in site-packages)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        return []
    return [str(root), *(str(project.parent) for project in sorted(root.glob("agents/*/pyproject.toml")))]


def read_assignments(directory: Path) -> list[Assignment]:
    """Every deployment published in ``directory``, in the format the module docstring describes.

    A file removed or being replaced while it is read, or one that is not such an object, is left
    out: the next look at the folder sees it whole. A folder that does not exist (yet) lists none.
    """
    found = []
    for path in sorted(directory.glob("dep_*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        deployment_id, api_key = data.get("deployment_id"), data.get("api_key")
        if isinstance(deployment_id, str) and deployment_id and isinstance(api_key, str) and api_key:
            found.append(Assignment(deployment_id, api_key))
    return found


@dataclass
class _Served:
    """A deployment this process serves: its key, worker thread and stop signal."""

    api_key: str
    worker: Worker
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)


class AssignmentServer:
    """One pool process: a worker thread per deployment listed in the dataplanes folder."""

    def __init__(self, dataplanes_dir: Path, control_plane_url: str, *, index: int = 0, lease_seconds: int = 30,
                 poll_wait: float = 10.0, drain_seconds: float = 20.0, refresh_seconds: float = 2.0) -> None:
        self.dataplanes_dir = dataplanes_dir
        self.control_plane_url = control_plane_url
        self.index = index
        self.lease_seconds = lease_seconds
        self.poll_wait = poll_wait
        self.drain_seconds = drain_seconds
        self.refresh_seconds = refresh_seconds
        self.served: dict[str, _Served] = {}
        self._rejected: set[tuple[str, str]] = set()

    def refresh(self) -> None:
        """Start workers for new deployments; drain those of removed or re-keyed ones."""
        wanted = {a.deployment_id: a.api_key for a in read_assignments(self.dataplanes_dir)}
        for deployment_id, served in list(self.served.items()):
            if not served.thread.is_alive() and not served.stop.is_set():
                # The worker ended by itself: retried at this refresh, unless its key was rejected.
                if served.worker.rejected:
                    self._rejected.add((deployment_id, served.api_key))
                del self.served[deployment_id]
            elif wanted.get(deployment_id) != served.api_key:
                served.stop.set()
                if not served.thread.is_alive():
                    del self.served[deployment_id]
        for deployment_id, api_key in wanted.items():
            if deployment_id not in self.served and (deployment_id, api_key) not in self._rejected:
                self._start(deployment_id, api_key)

    def _start(self, deployment_id: str, api_key: str) -> None:
        # Imported here: the parent process (``marketplace up``) never loads LangGraph.
        from runtime.client import DataPlaneClient  # noqa: PLC0415
        from runtime.worker import Worker, WorkerOptions, default_worker_id  # noqa: PLC0415

        options = WorkerOptions(worker_id=f"{default_worker_id()}/{self.index}", lease_seconds=self.lease_seconds,
                                poll_wait=self.poll_wait, drain_seconds=self.drain_seconds)
        worker = Worker(DataPlaneClient(self.control_plane_url, api_key), options=options)
        stop = threading.Event()
        thread = threading.Thread(target=self._serve, args=(worker, stop), name=f"worker-{deployment_id}",
                                  daemon=True)
        self.served[deployment_id] = _Served(api_key, worker, thread, stop)
        thread.start()
        _log.info("pool process %d serves deployment %s", self.index, deployment_id)

    @staticmethod
    def _serve(worker: Worker, stop: threading.Event) -> None:
        try:
            worker.serve(stop)
        except Exception:  # noqa: BLE001 - one deployment's trouble must not stop the others
            _log.exception("worker stopped with an error")
        finally:
            worker.client.close()

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop``; then drain every worker."""
        while True:
            try:
                self.refresh()
            except OSError as exc:
                _log.warning("cannot read the dataplanes folder: %s", exc)
            if stop.wait(self.refresh_seconds):
                break
        for served in self.served.values():
            served.stop.set()
        deadline = time.monotonic() + self.drain_seconds + self.poll_wait + 5
        for served in self.served.values():
            served.thread.join(timeout=max(0.0, deadline - time.monotonic()))


class WorkerPool:
    """N ``python -m runtime.pool`` processes, kept running until ``stop``."""

    def __init__(self, dataplanes_dir: Path, control_plane_url: str, *, processes: int, lease_seconds: int = 30,
                 poll_wait: float = 10.0, drain_seconds: float = 20.0, env: dict[str, str] | None = None) -> None:
        if processes < 0:
            raise ValueError("processes must not be negative")
        self.dataplanes_dir = dataplanes_dir
        self.control_plane_url = control_plane_url
        self.size = processes
        self.lease_seconds = lease_seconds
        self.poll_wait = poll_wait
        self.drain_seconds = drain_seconds
        self.env = env
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * processes
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, name="pool-supervisor", daemon=True)

    def _command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "runtime.pool", "--dataplanes-dir", str(self.dataplanes_dir),
                "--control-plane-url", self.control_plane_url, "--index", str(index),
                "--lease-seconds", str(self.lease_seconds), "--poll-wait", str(self.poll_wait),
                "--drain-seconds", str(self.drain_seconds)]

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._command(index), env=self.environment(), stdin=subprocess.DEVNULL)  # noqa: S603 - this interpreter

    def environment(self) -> dict[str, str]:
        """The environment of a worker process."""
        env = dict(os.environ if self.env is None else self.env)
        # One BLAS thread per worker (why: shared/kernel/blas.py, which the data plane may not import).
        for name in BLAS_THREAD_VARIABLES:
            env.setdefault(name, "1")
        # The worker must import this project (and its built-in agents) whatever the caller's working
        # directory, also from a source checkout that was not installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*source_paths(), env.get("PYTHONPATH", "")) if p)
        return env

    def start(self) -> None:
        """Start the processes and their supervisor."""
        with self._lock:
            for index in range(self.size):
                self.processes[index] = self._spawn(index)
        if self.size:
            self._supervisor.start()

    @property
    def pids(self) -> list[int]:
        """The running processes' ids."""
        with self._lock:
            return [p.pid for p in self.processes if p is not None and p.poll() is None]

    def _supervise(self) -> None:
        backoff = [1.0] * self.size
        while not self._stopping.wait(1.0):
            with self._lock:
                for index, proc in enumerate(self.processes):
                    if proc is None or proc.poll() is None or self._stopping.is_set():
                        continue
                    _log.warning("pool process %d exited with %s; restarting in %.0fs", index, proc.returncode,
                                 backoff[index])
                    self.processes[index] = None
                    threading.Timer(backoff[index], self._respawn, args=(index,)).start()
                    backoff[index] = min(backoff[index] * 2, 30.0)

    def _respawn(self, index: int) -> None:
        with self._lock:
            if not self._stopping.is_set() and self.processes[index] is None:
                self.processes[index] = self._spawn(index)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM every process (they drain), then SIGKILL what is left after ``timeout``."""
        self._stopping.set()
        with self._lock:
            procs = [p for p in self.processes if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.drain_seconds + self.poll_wait + 10 if timeout is None else timeout)
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    """One pool process (started by ``WorkerPool``)."""
    parser = argparse.ArgumentParser(prog="python -m runtime.pool")
    parser.add_argument("--dataplanes-dir", required=True, type=Path)
    parser.add_argument("--control-plane-url", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--lease-seconds", type=int, default=30)
    parser.add_argument("--poll-wait", type=float, default=10.0)
    parser.add_argument("--drain-seconds", type=float, default=20.0)
    parser.add_argument("--log-level", default=os.environ.get("MARKETPLACE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    from shared.kernel.jsonlog import configure_logging  # noqa: PLC0415 - logging only, no services

    configure_logging(args.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        _log.info("pool process %d: %s, draining", args.index, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    AssignmentServer(args.dataplanes_dir, args.control_plane_url, index=args.index, lease_seconds=args.lease_seconds,
                     poll_wait=args.poll_wait, drain_seconds=args.drain_seconds).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
