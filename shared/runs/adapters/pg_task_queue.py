"""The task queue on PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims, ``LISTEN/NOTIFY`` wake-ups.

Every state change is one row update keyed by the task id, and every claim is one statement:
the next claimable row (queued and due, or leased with an expired lease) is locked with
``FOR UPDATE SKIP LOCKED`` and leased in the same ``UPDATE``, so concurrent claimers never
wait for each other and never take the same row. Notifications only wake waiting claimers;
what a claimer gets is always decided by that statement, and a poll every ``poll_interval``
seconds covers a missed or delayed notification (and tasks whose delay or lease runs out).

The queue's own statements (``task_queue.sql`` beside this module) run through the kernel's
statement runner: single statements in ``Database.read()`` (autocommit, prepared: one round trip
each), a failure's lock-then-update in ``Database.transaction()``; so server errors arrive as the
kernel's ``QueryError``/``DatabaseUnavailable``. Wake-ups arrive on a connection of their own
through psycopg's ``Connection.notifies()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from shared.kernel.db.database import ASYNC_COMMIT, Connect, Database, Row
from shared.kernel.db.queries import Queries
from shared.kernel.db.statements import Statements
from shared.kernel.ids import new_id
from shared.runs.task_queue import (
    ClaimedTask,
    HeartbeatResult,
    LeaseLost,
    RetryPolicy,
    TaskInfo,
    TaskState,
)

_log = logging.getLogger(__name__)

DEFAULT_CHANNEL = "task_queue"
# A notification payload that wakes every waiter, whatever deployment it waits for.
_WAKE_ALL = "*"
_MAX_ERROR_CHARS = 8000
# The most tasks one claim_batch or complete_many handles.
MAX_BATCH = 100
# How long a waiting claimer sleeps when a due row exists but another session has it locked.
_LOCKED_RETRY_SECONDS = 0.05

_Q = Queries("shared.runs.adapters", "task_queue.sql")

# Acknowledgements (claim, heartbeat, complete, fail) may commit asynchronously: PostgreSQL then
# returns before the WAL reaches the disk. A crash of the database can lose the last few
# hundred milliseconds of them, which at-least-once delivery already covers: a lost claim or
# heartbeat is an expired lease, a lost completion or failure a redelivery. Enqueues always
# commit synchronously (see ASYNC_COMMIT).
_ASYNC_ACK = _Q.async_ack.format(async_commit=ASYNC_COMMIT)


@dataclass(frozen=True)
class _Sql:
    """The acknowledging statements, with or without asynchronous commit."""

    claim_any: str
    claim_deployment: str
    heartbeat: str
    complete: str
    complete_many: str
    record_failure: str

    enqueue: str
    complete_in_tx: str
    lock_lease: str
    request_cancel: str
    next_due_any: str
    next_due_deployment: str
    get: str

    @classmethod
    def build(cls, *, durable_acks: bool) -> _Sql:
        ack = "" if durable_acks else _ASYNC_ACK
        deployment = _Q.claim_deployment_filter
        return cls(
            claim_any=_Q.claim.format(deployment_filter="", ack=ack),
            claim_deployment=_Q.claim.format(deployment_filter=deployment, ack=ack),
            heartbeat=_Q.heartbeat.format(ack=ack),
            complete=_Q.complete.format(ack=ack),
            complete_many=_Q.complete_many.format(ack=ack),
            record_failure=_Q.record_failure.format(ack=ack),
            enqueue=_Q.enqueue,
            # Inside a caller's transaction the commit is the caller's: durable.
            complete_in_tx=_Q.complete.format(ack=""),
            lock_lease=_Q.lock_lease,
            request_cancel=_Q.request_cancel,
            next_due_any=_Q.next_due.format(deployment_filter=""),
            next_due_deployment=_Q.next_due.format(deployment_filter=_Q.next_due_deployment_filter),
            get=_Q.get,
        )


class _Listener:
    """One LISTEN connection per queue object, fanning wake-ups out to waiting claimers.

    The thread waits in psycopg's ``Connection.notifies()`` at most ``idle_check`` seconds at a
    time (so it notices ``stop`` and a dead connection), and reconnects with a growing delay when
    the connection is lost; while it is away every waiter falls back to polling.
    """

    def __init__(self, connect: Callable[[], contextlib.AbstractContextManager[psycopg.Connection[Any]]], channel: str,
                 idle_check: float) -> None:
        self._connect = connect
        self._channel = channel
        self._idle_check = idle_check
        self._waiters: dict[threading.Event, str | None] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pg-listen-{channel}", daemon=True)
        self._thread.start()

    def register(self, deployment_id: str | None) -> threading.Event:
        """An event set whenever a task for ``deployment_id`` (None: any) may have arrived."""
        event = threading.Event()
        with self._lock:
            self._waiters[event] = deployment_id
        return event

    def unregister(self, event: threading.Event) -> None:
        """Stop waking ``event``."""
        with self._lock:
            self._waiters.pop(event, None)

    def stop(self, wake: Callable[[], object] | None = None) -> None:
        """End the thread and close its connection; ``wake`` sends it a notification so it
        need not wait out its ``idle_check``."""
        self._stopping.set()
        if wake is not None:
            with contextlib.suppress(Exception):
                wake()
        self._thread.join(timeout=self._idle_check + 5)

    def _wake(self, payloads: set[str] | None) -> None:
        with self._lock:
            for event, deployment_id in self._waiters.items():
                if (payloads is None or deployment_id is None or _WAKE_ALL in payloads
                        or deployment_id in payloads):
                    event.set()

    def _run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    self._listen(conn)
                delay = 0.2
            except Exception:  # noqa: BLE001 - the listener must survive a lost connection
                _log.warning("task queue listener lost its connection; reconnecting", exc_info=True)
            finally:
                self.listening.clear()
                self._wake(None)  # waiters fall back to polling until we are back
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, 5.0)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(psycopg.sql.SQL(_Q.listen).format(psycopg.sql.Identifier(self._channel)))
        self.listening.set()
        # Notifications sent while we were not listening are lost: let every waiter look again.
        self._wake(None)
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=self._idle_check):
                if self._stopping.is_set():
                    return
                self._wake({notify.payload})
            conn.execute(_Q.ping)


class PgTaskQueue:
    """``TaskQueue`` on PostgreSQL (the local mode's queue, and the state behind the gcp one).

    ``listen_connect`` opens the dedicated LISTEN connection; without it the listener holds
    one connection of the pool for as long as the queue lives. ``poll_interval`` bounds how
    long a waiting claimer goes without looking, notification or not. ``durable_acks`` makes
    claims, heartbeats, completions and failures wait for the WAL flush too (see
    ``_ASYNC_ACK``: by default they do not, which at-least-once delivery allows).
    """

    def __init__(self, db: Database, *, listen_connect: Connect | None = None,
                 retry: RetryPolicy | None = None, poll_interval: float = 1.0,
                 channel: str = DEFAULT_CHANNEL, durable_acks: bool = False) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.db = db
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.channel = channel
        self._listen_connect = listen_connect
        self._sql = _Sql.build(durable_acks=durable_acks)
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._closed = False

    # -- plumbing ----------------------------------------------------------
    def _run(self, sql: str, *args: Any) -> list[Row]:
        """One statement in autocommit (``Database.read()``; prepared): one round trip."""
        with self.db.read() as tx:
            return tx.fetch_all(sql, *args)

    def _listen_source(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        if self._listen_connect is not None:
            return self._listen_connect()
        return self.db.connection()

    def listener(self) -> _Listener:
        """The shared listener, started on first use."""
        with self._listener_lock:
            if self._closed:
                raise RuntimeError("the task queue is closed")
            if self._listener is None:
                self._listener = _Listener(self._listen_source, self.channel,
                                           idle_check=min(max(self.poll_interval, 0.5), 5.0))
            return self._listener

    # -- TaskQueue -----------------------------------------------------------
    def enqueue(self, tx: Statements | None, *, kind: str, payload: dict[str, Any], run_id: str | None,
                org_id: str, deployment_id: str | None, max_attempts: int = 5,
                available_at: datetime | None = None) -> str:
        """Add a task (in ``tx`` when given) and notify waiting claimers on commit."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        task_id = new_id("task")
        params = (task_id, kind, json.dumps(payload), run_id, org_id, deployment_id, max_attempts,
                  available_at, self.channel, _notify_payload(deployment_id))
        if tx is None:
            self._run(self._sql.enqueue, *params)
        else:
            tx.defer(self._sql.enqueue, *params)  # sent with the caller's next statement or its commit
        return task_id

    def claim_next(self, *, deployment_id: str | None, worker_id: str, lease_seconds: int,
                   wait_seconds: float) -> ClaimedTask | None:
        """Lease the next due task, waiting up to ``wait_seconds`` for one."""
        tasks = self.claim_batch(deployment_id=deployment_id, worker_id=worker_id,
                                 lease_seconds=lease_seconds, wait_seconds=wait_seconds, limit=1)
        return tasks[0] if tasks else None

    def claim_batch(self, *, deployment_id: str | None, worker_id: str, lease_seconds: int,
                    wait_seconds: float, limit: int) -> list[ClaimedTask]:
        """Lease up to ``limit`` due tasks in one statement, waiting up to ``wait_seconds`` for one."""
        if lease_seconds < 1:
            raise ValueError("lease_seconds must be at least 1")
        if not 1 <= limit <= MAX_BATCH:
            raise ValueError(f"limit must be between 1 and {MAX_BATCH}")
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        listener: _Listener | None = None
        waiter: threading.Event | None = None
        # When the next row falls due (monotonic clock). Looked up again after a sleep that
        # ran out, not after a notification that someone else's claim answered: a new task
        # notifies, and a row taken by another claimer only falls due later, if at all.
        due_at: float | None = None
        look_up_due = True
        try:
            while True:
                tasks = self._claim_once(deployment_id, worker_id, lease_seconds, limit)
                if tasks:
                    return tasks
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                if waiter is None:
                    # Register, then look once more: a task that arrived between the claim
                    # above and the registration would otherwise wait for the next poll.
                    listener = self.listener()
                    waiter = listener.register(deployment_id)
                    continue
                now = time.monotonic()
                if look_up_due:
                    due_in = self._seconds_until_due(deployment_id)
                    due_at = None if due_in is None else now + max(due_in, _LOCKED_RETRY_SECONDS)
                sleep = min(remaining, self.poll_interval)
                if due_at is not None:
                    sleep = min(sleep, max(due_at - now, 0.0))
                look_up_due = not waiter.wait(sleep)
                waiter.clear()
        finally:
            if listener is not None and waiter is not None:
                listener.unregister(waiter)

    def _claim_once(self, deployment_id: str | None, worker_id: str, lease_seconds: int,
                    limit: int) -> list[ClaimedTask]:
        args: tuple[Any, ...]
        if deployment_id is None:
            sql, args = self._sql.claim_any, (lease_seconds, lease_seconds, worker_id, limit)
        else:
            sql = self._sql.claim_deployment
            args = (lease_seconds, lease_seconds, worker_id, deployment_id, limit)
        with self.db.read() as tx:  # autocommit: each claim is its own transaction
            while True:
                rows = tx.fetch_all(sql, *args)
                if not rows:
                    return []
                # Rows whose lease expired past their last attempt, or whose cancel was
                # requested, came back closed: claim again if nothing else was leased.
                leased = [_claimed(row) for row in rows if row["state"] == TaskState.LEASED]
                if leased:
                    return leased

    def _seconds_until_due(self, deployment_id: str | None) -> float | None:
        with self.db.read() as tx:
            if deployment_id is None:
                due = tx.fetch_val(self._sql.next_due_any)
            else:
                due = tx.fetch_val(self._sql.next_due_deployment, deployment_id)
        return None if due is None else float(due)

    def heartbeat(self, task_id: str, lease_token: str, lease_seconds: int) -> HeartbeatResult:
        """Extend the lease; ``ok`` False if the lease was lost."""
        if lease_seconds < 1:
            raise ValueError("lease_seconds must be at least 1")
        rows = self._run(self._sql.heartbeat, lease_seconds, lease_seconds, task_id, lease_token)
        if not rows:
            info = self.get(task_id)
            return HeartbeatResult(ok=False, cancel_requested=bool(info and info.cancel_requested),
                                   lease_expires_at=None)
        row = rows[0]
        return HeartbeatResult(ok=True, cancel_requested=bool(row["cancel_requested"]),
                               lease_expires_at=_from_epoch(row["lease_expires_at"]))

    def complete(self, task_id: str, lease_token: str) -> bool:
        """Mark done if ``lease_token`` is still the task's lease."""
        return bool(self._run(self._sql.complete, task_id, lease_token))

    def complete_in(self, tx: Statements, task_id: str, lease_token: str) -> None:
        """Mark done inside the caller's transaction, if ``lease_token`` is still the task's lease.

        Held back with the transaction's other writes (``Tx.defer``) and durable with its commit.
        """
        tx.defer(self._sql.complete_in_tx, task_id, lease_token)

    def complete_many(self, leases: Sequence[tuple[str, str]]) -> set[str]:
        """Mark done every ``(task_id, lease_token)`` whose lease is still current, in one
        statement; returns the ids that were completed (a lost lease is left as it is)."""
        if len(leases) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} completions at once")
        if not leases:
            return set()
        ids = [task_id for task_id, _ in leases]
        tokens = [token for _, token in leases]
        return {row["id"] for row in self._run(self._sql.complete_many, ids, tokens)}

    def fail(self, task_id: str, lease_token: str, error: str, retryable: bool) -> TaskState:
        """Record a failed attempt: retry after a backoff, or close the task."""
        error = error[:_MAX_ERROR_CHARS]
        with self.db.transaction() as tx:
            lease = tx.fetch_one(self._sql.lock_lease, task_id, lease_token)
            if lease is None:
                raise LeaseLost(f"task {task_id}: the lease was lost")
            delay: float | None = None
            if lease["cancel_requested"]:
                state = TaskState.CANCELLED
            elif retryable and lease["attempt"] < lease["max_attempts"]:
                state, delay = TaskState.QUEUED, self.retry.delay(lease["attempt"])
            else:
                state = TaskState.DEAD
            tx.defer(self._sql.record_failure, state.value, error, state.value, delay, state.value, task_id)
        return state

    def request_cancel(self, task_id: str) -> TaskState | None:
        """Cancel a queued task now, or flag a leased one for its worker."""
        rows = self._run(self._sql.request_cancel, task_id)
        if rows:
            return TaskState(rows[0]["state"])
        info = self.get(task_id)
        return None if info is None else info.state

    def get(self, task_id: str) -> TaskInfo | None:
        """The task's current state, or None."""
        rows = self._run(self._sql.get, task_id)
        if not rows:
            return None
        row = rows[0]
        return TaskInfo(id=row["id"], kind=row["kind"], payload=_as_dict(row["payload"]), run_id=row["run_id"],
                        org_id=row["org_id"], deployment_id=row["deployment_id"], state=TaskState(row["state"]),
                        attempt=row["attempt"], max_attempts=row["max_attempts"], available_at=row["available_at"],
                        lease_owner=row["lease_owner"], lease_expires_at=row["lease_expires_at"],
                        cancel_requested=row["cancel_requested"], last_error=row["last_error"],
                        created_at=row["created_at"], finished_at=row["finished_at"])

    def close(self) -> None:
        """Stop the listener (the pool belongs to the caller)."""
        with self._listener_lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop(wake=lambda: self._run(_Q.notify, self.channel, _WAKE_ALL))


def _notify_payload(deployment_id: str | None) -> str:
    # Payloads are kept to ASCII ids; anything else wakes every waiter.
    if deployment_id is None or not deployment_id.isascii():
        return _WAKE_ALL
    return deployment_id


def _as_dict(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(loaded, dict):
        raise TypeError("a task payload is a JSON object")
    return loaded


def _from_epoch(seconds: float) -> datetime:
    # The hot statements return instants as epoch seconds (a float8 is the cheapest to load).
    return datetime.fromtimestamp(seconds, tz=UTC)


def _claimed(row: Row) -> ClaimedTask:
    return ClaimedTask(id=row["id"], kind=row["kind"], payload=_as_dict(row["payload"]), run_id=row["run_id"],
                       org_id=row["org_id"], deployment_id=row["deployment_id"], attempt=row["attempt"],
                       lease_token=row["lease_token"], lease_expires_at=_from_epoch(row["lease_expires_at"]))
