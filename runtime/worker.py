"""The data plane's worker: register, long-poll for tasks, execute them with a live lease, report.

One ``Worker`` serves one deployment (its data-plane key) and executes one run at a time:

1. ``register`` announces the data plane (the deployment becomes ``ready``); a background thread
   then reports it alive every ``heartbeat_interval_seconds`` the control plane asked for.
2. ``serve`` long-polls ``GET /tasks/next``; each leased task is executed by ``process``.
3. While a run executes, a ``LeaseKeeper`` thread renews the lease (every third of its length),
   sends buffered log lines that have waited long enough, and notes a cancel request or a lost
   lease; the executor looks at both between steps.
4. The outcome is reported with ``POST .../complete`` — unless the lease was lost (another worker
   has the run) or the worker is stopping, in which case nothing is reported and the run is
   delivered again once the lease expires, resuming from its last checkpoint.

A graceful stop (``stop`` event) claims nothing new and lets the current run finish for up to
``drain_seconds``; after that the run is left at the next step boundary for redelivery.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from runtime import (
    run_memory,  # memory (issue 17)
    usage,  # billing (issue 16)
)
from runtime.approvals import TaskApprovalDesk  # issue 15
from runtime.checkpointer import TaskCheckpointStore
from runtime.client import (
    ControlPlaneError,
    CredentialRejected,
    DataPlaneClient,
    LeaseLostError,
    Registration,
    Task,
)
from runtime.executor import COUNTERS, BufferedRunLog, Executor, Outcome, RunSpec, StopReason
from runtime.sandbox import SandboxExecutor, SandboxOptions

_log = logging.getLogger(__name__)

RUNTIME_VERSION = "0.1.0"


def default_worker_id() -> str:
    """``hostname:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker polls and holds leases."""

    worker_id: str = field(default_factory=default_worker_id)
    lease_seconds: int = 30
    poll_wait: float = 20.0
    drain_seconds: float = 30.0
    hostname: str = field(default_factory=socket.gethostname)
    version: str = RUNTIME_VERSION
    capabilities: tuple[str, ...] = ("langgraph", "agent-packages")
    #: issue 14: where runs work and what their child processes must not see
    sandbox: SandboxOptions = field(default_factory=SandboxOptions)
    #: billing (issue 16): seconds a run stopped at its maximum charge has to reach a step boundary
    #: before its child is killed (shorter than ``sandbox.stop_grace``: such a run must end within
    #: 5 s of the usage report that crossed its cap, docs/BILLING.md)
    cap_stop_grace: float = 2.0

    def __post_init__(self) -> None:
        if self.lease_seconds < 2:
            raise ValueError("lease_seconds must be at least 2")
        if not 0 <= self.poll_wait <= 30:
            raise ValueError("poll_wait is between 0 and 30 seconds")


class LeaseKeeper:
    """Renews one task's lease, sends due log lines, and notes cancel requests and a lost lease."""

    TICK_SECONDS = 0.1

    def __init__(self, client: DataPlaneClient, task: Task, log: BufferedRunLog, *, lease_seconds: int) -> None:
        self.client = client
        self.task = task
        self.log = log
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3.0, 0.5)
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{task.run_id}", daemon=True)
        if task.cancel_requested:
            self.cancel_requested.set()

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the lease then runs out unless the task was completed)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(self.TICK_SECONDS) and not self.lost.is_set():
            if self.log.due():
                self.log.flush()
            if time.monotonic() < next_beat:
                continue
            try:
                if self.client.heartbeat(self.task.task_id, self.task.lease_token, lease_seconds=self.lease_seconds):
                    self.cancel_requested.set()
                next_beat = time.monotonic() + self.interval
            except LeaseLostError:
                _log.warning("lost the lease of run %s (attempt %d)", self.task.run_id, self.task.attempt)
                self.lost.set()
            except ControlPlaneError as exc:
                # Try again soon: the lease survives a missed renewal or two.
                _log.warning("heartbeat of run %s failed: %s", self.task.run_id, exc)
                next_beat = time.monotonic() + min(self.interval, 1.0)


class Worker:
    """Serves one deployment, one run at a time."""

    def __init__(self, client: DataPlaneClient, *, options: WorkerOptions | None = None,
                 executor: Executor | SandboxExecutor | None = None) -> None:
        self.client = client
        self.options = options or WorkerOptions()
        # issue 14: every run executes in a confined child process (runtime/sandbox.py)
        self.executor = executor or SandboxExecutor(self.options.sandbox, fetch_package=client.fetch_package)
        self.registration: Registration | None = None
        self.current_run: str | None = None
        self.runs_done = 0
        self.rejected = False  # the control plane refused the key: serving again is pointless
        self._beating: threading.Thread | None = None

    # -- registration ------------------------------------------------------------------------------
    def register(self, stop: threading.Event | None = None) -> Registration:
        """Register (retrying while the control plane is unreachable) and start reporting alive."""
        delay = 1.0
        while True:
            try:
                self.registration = self.client.register(version=self.options.version,
                                                         hostname=self.options.hostname,
                                                         capabilities=self.options.capabilities)
                break
            except CredentialRejected:
                raise
            except ControlPlaneError as exc:
                if not exc.retryable or (stop is not None and stop.wait(delay)):
                    raise
                _log.warning("cannot register yet (%s); retrying", exc)
                delay = min(delay * 2, 30.0)
        _log.info("registered the data plane of deployment %s (%s %s)", self.registration.deployment_id,
                  self.registration.agent_id, self.registration.version)
        if stop is not None and self._beating is None:
            self._beating = threading.Thread(target=self._report_alive, args=(stop,), daemon=True,
                                             name=f"alive-{self.registration.deployment_id}")
            self._beating.start()
        return self.registration

    def _report_alive(self, stop: threading.Event) -> None:
        assert self.registration is not None
        while not stop.wait(self.registration.heartbeat_interval_seconds):
            try:
                self.client.heartbeat_dataplane()
            except ControlPlaneError as exc:
                _log.warning("data-plane heartbeat failed: %s", exc)
                if isinstance(exc, CredentialRejected):
                    return

    # -- the loop --------------------------------------------------------------------------------
    def serve(self, stop: threading.Event) -> None:
        """Register, then run tasks until ``stop`` is set (or the key is rejected)."""
        try:
            self.register(stop)
            while not stop.is_set():
                self.run_once(wait=self.options.poll_wait, stop=stop)
        except CredentialRejected as exc:
            self.rejected = True
            _log.error("the control plane rejected this data plane's key (%s); stopping", exc.message)
        except ControlPlaneError as exc:
            if not stop.is_set():
                raise
            _log.info("stopped while the control plane was unreachable: %s", exc)

    def run_once(self, *, wait: float, stop: threading.Event | None = None) -> Outcome | None:
        """Lease one task (waiting up to ``wait`` seconds) and process it; None when there was none."""
        try:
            task = self.client.next_task(wait=wait, lease_seconds=self.options.lease_seconds,
                                         worker=self.options.worker_id)
        except CredentialRejected:
            raise
        except ControlPlaneError as exc:
            _log.warning("polling for tasks failed: %s", exc)
            if stop is not None:
                stop.wait(min(max(wait, 1.0), 5.0))
            return None
        return None if task is None else self.process(task, stop)

    def process(self, task: Task, stop: threading.Event | None = None) -> Outcome:
        """Execute one leased task with a live lease and report its outcome."""
        self.current_run = task.run_id
        keeper: LeaseKeeper

        def on_log_error(exc: Exception) -> None:
            if isinstance(exc, LeaseLostError):
                keeper.lost.set()
            else:
                _log.warning("sending logs of run %s failed (kept for the next try): %s", task.run_id, exc)

        log = BufferedRunLog(lambda lines: self.client.send_logs(task.agent_id, task.run_id, task.lease_token, lines),
                             first_seq=task.next_log_seq, on_error=on_log_error)
        keeper = LeaseKeeper(self.client, task, log, lease_seconds=self.options.lease_seconds)
        keeper.start()
        # billing (issue 16): usage heartbeats; a run at its maximum charge is cancelled (runtime/usage.py)
        usage_beat = usage.UsageHeartbeat(task.run_id, lambda records, cpu: self.client.report_usage(
            task.agent_id, task.run_id, task.lease_token, records=records, cpu_seconds=cpu),
            on_stop=keeper.cancel_requested.set)
        usage_beat.start()
        draining_until: list[float] = []

        def should_stop() -> StopReason | None:
            if keeper.lost.is_set():
                return StopReason.LEASE_LOST
            if keeper.cancel_requested.is_set():
                return StopReason.CANCELLED
            if stop is not None and stop.is_set():
                if not draining_until:
                    draining_until.append(time.monotonic() + self.options.drain_seconds)
                if time.monotonic() > draining_until[0]:
                    return StopReason.SHUTDOWN
            return None

        _log.info("running %s (attempt %d of %d)", task.run_id, task.attempt, task.max_attempts)
        try:
            if task.cancel_requested:
                outcome = Outcome("cancelled", dict.fromkeys(COUNTERS, 0.0), error="cancelled before it started")
            else:
                # memory (issue 17): load the run's memory context before it runs.
                spec = dataclasses.replace(RunSpec.from_task(task), memory=run_memory.load(self.client, task))
                outcome = self.executor.execute(spec, log=log,
                                                checkpoints=TaskCheckpointStore(self.client, task),
                                                should_stop=should_stop,
                                                approvals=TaskApprovalDesk(self.client, task),  # issue 15
                                                stop_grace=lambda: (self.options.cap_stop_grace  # billing (16)
                                                                    if usage_beat.stopped_by_cap.is_set() else None))
            log.flush()
            if keeper.lost.is_set():
                outcome.status, outcome.stop_reason = "abandoned", StopReason.LEASE_LOST
            if outcome.status == "abandoned":
                _log.warning("left run %s for redelivery (%s)", task.run_id, outcome.stop_reason)
                return outcome
            if outcome.status == "awaiting_approval":  # issue 15: park the run; its lease ends
                self._park(task, outcome)
                return outcome
            run_memory.store(self.client, task, outcome.status, outcome.outputs, outcome.error)  # memory (issue 17)
            self._report(task, outcome)
            return outcome
        finally:
            usage_beat.stop()  # billing (issue 16)
            usage.withdraw(task.run_id)  # billing (issue 16)
            keeper.stop()
            self.current_run = None
            self.runs_done += 1

    def _park(self, task: Task, outcome: Outcome) -> None:
        """Issue 15: report the gated calls; without an answer the lease runs out and the redelivered
        run stops at the same calls again."""
        try:
            TaskApprovalDesk(self.client, task).park((outcome.outputs or {}).get("actions", []))
        except ControlPlaneError as exc:
            _log.error("run %s: reporting its pending approvals failed: %s", task.run_id, exc)
            return
        _log.info("run %s waits for approval", task.run_id)

    def _report(self, task: Task, outcome: Outcome) -> None:
        try:
            completion = self.client.complete(task, status=outcome.status, metrics=outcome.report_metrics,
                                              outputs=outcome.outputs, error=outcome.error,
                                              retryable=outcome.retryable)
        except LeaseLostError:
            _log.warning("run %s: the lease was lost before the completion was recorded", task.run_id)
            return
        except ControlPlaneError as exc:
            # The lease runs out and the run is delivered again; its checkpoints let it finish fast.
            _log.error("run %s: reporting the outcome failed: %s", task.run_id, exc)
            return
        _log.info("run %s %s (attempt %d)%s", task.run_id, completion.status, completion.attempt,
                  "; a retry is scheduled" if completion.retry_scheduled else "")
