"""The task queue on PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims, ``LISTEN/NOTIFY`` wake-ups.

Every state change is one row update keyed by the task id, and every claim is one statement:
the next claimable row (queued and due, or leased with an expired lease) is locked with
``FOR UPDATE SKIP LOCKED`` and leased in the same ``UPDATE``, so concurrent claimers never
wait for each other and never take the same row. Notifications only wake waiting claimers;
what a claimer gets is always decided by that statement, and a poll every ``poll_interval``
seconds covers a missed or delayed notification (and tasks whose delay or lease runs out).

The queue's own statements run as named prepared statements on autocommit connections
borrowed from the pool: one round trip each, instead of the five (BEGIN, parse, bind,
execute, COMMIT) of an ordinary DB-API transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pg8000.converters import make_params

from shared.kernel.db import wire
from shared.kernel.db.database import ASYNC_COMMIT, ConnectionFactory, Database, DbConnection, Tx
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

_ENQUEUE = """
WITH ins AS (
    INSERT INTO tasks (id, kind, payload, run_id, org_id, deployment_id, max_attempts, available_at)
    VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, coalesce($8::timestamptz, now()))
    RETURNING id
)
SELECT pg_notify($9, $10) FROM ins
"""

# $1 worker id, $2 lease seconds, $3 how many[, $4 deployment id]. The candidates are an
# uncorrelated ARRAY(subquery) on purpose: PostgreSQL evaluates it exactly once (an InitPlan),
# whereas a join against a LIMIT ... SKIP LOCKED subquery may be rescanned and lease more rows
# than it returns. The UPDATE then sees the rows as locked. A row whose lease expired after
# its last allowed attempt (queued rows always have attempts left), or whose cancellation was
# requested, is closed instead of leased; the caller
# then claims again.
_CLAIM = """
UPDATE tasks AS t SET
    state = CASE WHEN t.cancel_requested THEN 'cancelled'
                 WHEN t.attempt >= t.max_attempts THEN 'dead' ELSE 'leased' END,
    attempt = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN t.attempt
                   ELSE t.attempt + 1 END,
    available_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN NULL
                        ELSE now() + make_interval(secs => $2) END,
    lease_expires_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN NULL
                            ELSE now() + make_interval(secs => $2) END,
    lease_token = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN NULL
                       ELSE gen_random_uuid()::text END,
    lease_owner = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN t.lease_owner ELSE $1 END,
    last_error = CASE WHEN NOT t.cancel_requested AND t.attempt >= t.max_attempts
                      THEN 'lease expired on the last attempt (' || t.attempt || ')'
                      ELSE t.last_error END,
    finished_at = CASE WHEN t.cancel_requested OR t.attempt >= t.max_attempts THEN now() END
WHERE t.id = ANY(ARRAY(
    SELECT id FROM tasks
    WHERE state IN ('queued', 'leased') AND available_at <= now() {deployment_filter}
    ORDER BY available_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)) {ack}
RETURNING t.state, t.id, t.kind, t.payload, t.run_id, t.org_id, t.deployment_id, t.attempt,
          t.lease_token, extract(epoch FROM t.lease_expires_at)::float8
"""

_HEARTBEAT = """
UPDATE tasks SET available_at = now() + make_interval(secs => $3),
                 lease_expires_at = now() + make_interval(secs => $3)
WHERE id = $1 AND lease_token = $2 AND state = 'leased' {ack}
RETURNING cancel_requested, extract(epoch FROM lease_expires_at)::float8
"""

_COMPLETE = """
UPDATE tasks SET state = 'done', available_at = NULL, lease_token = NULL, lease_expires_at = NULL,
                 finished_at = now()
WHERE id = $1 AND lease_token = $2 AND state = 'leased' {ack}
RETURNING id
"""

# Inside a caller's transaction the commit is the caller's: durable.
_COMPLETE_IN_TX = _COMPLETE.format(ack="")

# $1 task ids, $2 their lease tokens (same order).
_COMPLETE_MANY = """
UPDATE tasks AS t SET state = 'done', available_at = NULL, lease_token = NULL, lease_expires_at = NULL,
                      finished_at = now()
FROM unnest($1::text[], $2::text[]) AS c(id, token)
WHERE t.id = c.id AND t.lease_token = c.token AND t.state = 'leased' {ack}
RETURNING t.id
"""

_LOCK_LEASE = """
SELECT attempt, max_attempts, cancel_requested FROM tasks
WHERE id = $1 AND lease_token = $2 AND state = 'leased'
FOR UPDATE
"""

_RECORD_FAILURE = """
UPDATE tasks SET state = $2, last_error = $3,
                 available_at = CASE WHEN $2 = 'queued' THEN now() + make_interval(secs => $4) END,
                 lease_token = NULL, lease_expires_at = NULL,
                 finished_at = CASE WHEN $2 = 'queued' THEN NULL ELSE now() END
WHERE id = $1 {ack}
"""

# A queued task, or a leased one whose lease already ran out (nobody may be working on it),
# is cancelled at once; a live lease only gets the flag its worker sees in heartbeat.
_REQUEST_CANCEL = """
UPDATE tasks SET
    state = CASE WHEN state = 'queued' OR available_at <= now() THEN 'cancelled' ELSE state END,
    cancel_requested = true,
    lease_token = CASE WHEN state = 'queued' OR available_at <= now() THEN NULL ELSE lease_token END,
    lease_expires_at = CASE WHEN state = 'queued' OR available_at <= now() THEN NULL
                            ELSE lease_expires_at END,
    finished_at = CASE WHEN state = 'queued' OR available_at <= now() THEN now() ELSE finished_at END,
    available_at = CASE WHEN state = 'queued' OR available_at <= now() THEN NULL ELSE available_at END
WHERE id = $1 AND state IN ('queued', 'leased')
RETURNING state
"""

# Seconds until the next claimable row is due (a delayed start, a retry's backoff, a lease's expiry).
_NEXT_DUE = """
SELECT extract(epoch FROM min(available_at) - now())::float8 FROM tasks
WHERE state IN ('queued', 'leased') {deployment_filter}
"""
_NEXT_DUE_ANY = _NEXT_DUE.format(deployment_filter="")
_NEXT_DUE_DEPLOYMENT = _NEXT_DUE.format(deployment_filter="AND deployment_id = $1")

_GET = """
SELECT id, kind, payload, run_id, org_id, deployment_id, state, attempt, max_attempts, available_at,
       lease_owner, lease_expires_at, cancel_requested, last_error, created_at, finished_at
FROM tasks WHERE id = $1
"""


# Acknowledgements (claim, heartbeat, complete, fail) may commit asynchronously: PostgreSQL then
# returns before the WAL reaches the disk. A crash of the database can lose the last few
# hundred milliseconds of them, which at-least-once delivery already covers: a lost claim or
# heartbeat is an expired lease, a lost completion or failure a redelivery. Enqueues always
# commit synchronously (see ASYNC_COMMIT).
_ASYNC_ACK = f"AND {ASYNC_COMMIT}"


@dataclass(frozen=True)
class _Sql:
    """The acknowledging statements, with or without asynchronous commit."""

    claim_any: str
    claim_deployment: str
    heartbeat: str
    complete: str
    complete_many: str
    record_failure: str

    @classmethod
    def build(cls, *, durable_acks: bool) -> _Sql:
        ack = "" if durable_acks else _ASYNC_ACK
        return cls(
            claim_any=_CLAIM.format(deployment_filter="", ack=ack),
            claim_deployment=_CLAIM.format(deployment_filter="AND deployment_id = $4", ack=ack),
            heartbeat=_HEARTBEAT.format(ack=ack),
            complete=_COMPLETE.format(ack=ack),
            complete_many=_COMPLETE_MANY.format(ack=ack),
            record_failure=_RECORD_FAILURE.format(ack=ack),
        )


@dataclass(frozen=True)
class _Prepared:
    name: bytes
    columns: Any
    input_funcs: Any


class _StatementCache:
    """Named prepared statements, per connection (a statement lives as long as its session)."""

    def __init__(self) -> None:
        self._by_conn: weakref.WeakKeyDictionary[Any, dict[str, _Prepared]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def run(self, conn: Any, sql: str, params: Sequence[Any]) -> list[list[Any]]:
        """Execute ``sql`` (``$n`` placeholders) on ``conn``; rows as lists (empty without rows)."""
        with self._lock:
            statements = self._by_conn.setdefault(conn, {})
        prepared = statements.get(sql)
        if prepared is None:
            name, columns, input_funcs = conn.prepare_statement(sql, ())
            prepared = statements[sql] = _Prepared(name, columns, input_funcs)
        context = wire.execute_prepared(conn, (prepared.name, prepared.columns, prepared.input_funcs, sql),
                                        make_params(conn.py_types, params))
        return list(context.rows or [])


@contextlib.contextmanager
def _autocommit(conn: DbConnection) -> Iterator[Any]:
    raw: Any = conn
    raw.autocommit = True
    try:
        yield raw
    finally:
        raw.autocommit = False


class _Listener:
    """One LISTEN connection per queue object, fanning wake-ups out to waiting claimers.

    The thread sleeps in ``select()`` on the connection's socket (pg8000 keeps the raw socket
    as ``_usock``); when the server sends something it runs an empty query, which makes pg8000
    read the pending ``NotificationResponse`` messages into ``conn.notifications``. It also
    drains every ``idle_check`` seconds, which both checks the connection and picks up a
    notification that pg8000's buffered reader read ahead of the select.
    """

    def __init__(self, source: Callable[[], contextlib.AbstractContextManager[DbConnection]],
                 channel: str, idle_check: float) -> None:
        self._source = source
        self._channel = channel
        self._idle_check = idle_check
        self._waiters: dict[threading.Event, str | None] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._interrupt_r, self._interrupt_w = socket.socketpair()
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

    def stop(self) -> None:
        """End the thread and release its connection."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._interrupt_w.send(b"x")
        self._thread.join(timeout=10)
        self._interrupt_r.close()
        self._interrupt_w.close()

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
                with self._source() as conn:
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

    def _listen(self, conn: DbConnection) -> None:
        raw: Any = conn
        raw.autocommit = True
        raw.execute_simple(f'LISTEN "{self._channel}"')
        self.listening.set()
        # Notifications sent while we were not listening are lost: let every waiter look again.
        self._wake(None)
        sock = raw._usock  # pg8000 exposes no public socket handle
        try:
            while not self._stopping.is_set():
                ready, _, _ = select.select([sock, self._interrupt_r], [], [], self._idle_check)
                if self._interrupt_r in ready:
                    return
                raw.execute_simple("")
                payloads = set()
                while raw.notifications:
                    _pid, _channel, payload = raw.notifications.popleft()
                    payloads.add(payload)
                if payloads:
                    self._wake(payloads)
        finally:
            if self._stopping.is_set():
                with contextlib.suppress(Exception):
                    raw.execute_simple("UNLISTEN *")
            raw.autocommit = False


class PgTaskQueue:
    """``TaskQueue`` on PostgreSQL (the local mode's queue, and the state behind the gcp one).

    ``listen_connect`` opens the dedicated LISTEN connection; without it the listener holds
    one connection of the pool for as long as the queue lives. ``poll_interval`` bounds how
    long a waiting claimer goes without looking, notification or not. ``durable_acks`` makes
    claims, heartbeats, completions and failures wait for the WAL flush too (see
    ``_ASYNC_ACK``: by default they do not, which at-least-once delivery allows).
    """

    def __init__(self, db: Database, *, listen_connect: ConnectionFactory | None = None,
                 retry: RetryPolicy | None = None, poll_interval: float = 1.0,
                 channel: str = DEFAULT_CHANNEL, durable_acks: bool = False) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.db = db
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.channel = channel
        self._listen_connect = listen_connect
        self._statements = _StatementCache()
        self._sql = _Sql.build(durable_acks=durable_acks)
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._closed = False

    # -- plumbing ----------------------------------------------------------
    def _run(self, sql: str, *params: Any) -> list[list[Any]]:
        """One statement in its own (implicit) transaction."""
        with self.db.connection() as conn, _autocommit(conn) as raw:
            return self._statements.run(raw, sql, params)

    def _listen_source(self) -> contextlib.AbstractContextManager[DbConnection]:
        if self._listen_connect is not None:
            return contextlib.closing(self._listen_connect())
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
    def enqueue(self, tx: Tx | None, *, kind: str, payload: dict[str, Any], run_id: str | None,
                org_id: str, deployment_id: str | None, max_attempts: int = 5,
                available_at: datetime | None = None) -> str:
        """Add a task (in ``tx`` when given) and notify waiting claimers on commit."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        task_id = new_id("task")
        params = (task_id, kind, json.dumps(payload), run_id, org_id, deployment_id, max_attempts,
                  available_at, self.channel, _notify_payload(deployment_id))
        if tx is None:
            self._run(_ENQUEUE, *params)
        else:
            tx.defer(_ENQUEUE, *params)  # sent with the caller's next statement or its commit
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
        with self.db.connection() as conn, _autocommit(conn) as raw:
            while True:
                if deployment_id is None:
                    rows = self._statements.run(raw, self._sql.claim_any, (worker_id, lease_seconds, limit))
                else:
                    rows = self._statements.run(raw, self._sql.claim_deployment,
                                                (worker_id, lease_seconds, limit, deployment_id))
                if not rows:
                    return []
                # Rows whose lease expired past their last attempt, or whose cancel was
                # requested, came back closed: claim again if nothing else was leased.
                leased = [_claimed(fields) for state, *fields in rows if state == TaskState.LEASED]
                if leased:
                    return leased

    def _seconds_until_due(self, deployment_id: str | None) -> float | None:
        args = () if deployment_id is None else (deployment_id,)
        rows = self._run(_NEXT_DUE_ANY if deployment_id is None else _NEXT_DUE_DEPLOYMENT, *args)
        due = rows[0][0] if rows else None
        return None if due is None else float(due)

    def heartbeat(self, task_id: str, lease_token: str, lease_seconds: int) -> HeartbeatResult:
        """Extend the lease; ``ok`` False if the lease was lost."""
        if lease_seconds < 1:
            raise ValueError("lease_seconds must be at least 1")
        rows = self._run(self._sql.heartbeat, task_id, lease_token, lease_seconds)
        if not rows:
            info = self.get(task_id)
            return HeartbeatResult(ok=False, cancel_requested=bool(info and info.cancel_requested),
                                   lease_expires_at=None)
        cancel_requested, expires_at = rows[0]
        return HeartbeatResult(ok=True, cancel_requested=bool(cancel_requested),
                               lease_expires_at=_from_epoch(expires_at))

    def complete(self, task_id: str, lease_token: str) -> bool:
        """Mark done if ``lease_token`` is still the task's lease."""
        return bool(self._run(self._sql.complete, task_id, lease_token))

    def complete_in(self, tx: Tx, task_id: str, lease_token: str) -> None:
        """Mark done inside the caller's transaction, if ``lease_token`` is still the task's lease.

        Held back with the transaction's other writes (``Tx.defer``) and durable with its commit.
        """
        tx.defer(_COMPLETE_IN_TX, task_id, lease_token)

    def complete_many(self, leases: Sequence[tuple[str, str]]) -> set[str]:
        """Mark done every ``(task_id, lease_token)`` whose lease is still current, in one
        statement; returns the ids that were completed (a lost lease is left as it is)."""
        if len(leases) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} completions at once")
        if not leases:
            return set()
        ids = [task_id for task_id, _ in leases]
        tokens = [token for _, token in leases]
        return {row[0] for row in self._run(self._sql.complete_many, ids, tokens)}

    def fail(self, task_id: str, lease_token: str, error: str, retryable: bool) -> TaskState:
        """Record a failed attempt: retry after a backoff, or close the task."""
        error = error[:_MAX_ERROR_CHARS]
        with self.db.connection() as conn, _autocommit(conn) as raw:
            raw.execute_simple("BEGIN")
            try:
                rows = self._statements.run(raw, _LOCK_LEASE, (task_id, lease_token))
                if not rows:
                    raise LeaseLost(f"task {task_id}: the lease was lost")
                attempt, max_attempts, cancel_requested = rows[0]
                delay: float | None = None
                if cancel_requested:
                    state = TaskState.CANCELLED
                elif retryable and attempt < max_attempts:
                    state, delay = TaskState.QUEUED, self.retry.delay(attempt)
                else:
                    state = TaskState.DEAD
                self._statements.run(raw, self._sql.record_failure, (task_id, state.value, error, delay))
            except BaseException:
                with contextlib.suppress(Exception):
                    raw.execute_simple("ROLLBACK")
                raise
            raw.execute_simple("COMMIT")
        return state

    def request_cancel(self, task_id: str) -> TaskState | None:
        """Cancel a queued task now, or flag a leased one for its worker."""
        rows = self._run(_REQUEST_CANCEL, task_id)
        if rows:
            return TaskState(rows[0][0])
        info = self.get(task_id)
        return None if info is None else info.state

    def get(self, task_id: str) -> TaskInfo | None:
        """The task's current state, or None."""
        rows = self._run(_GET, task_id)
        if not rows:
            return None
        (id_, kind, payload, run_id, org_id, deployment_id, state, attempt, max_attempts, available_at,
         lease_owner, lease_expires_at, cancel_requested, last_error, created_at, finished_at) = rows[0]
        return TaskInfo(id=id_, kind=kind, payload=_as_dict(payload), run_id=run_id, org_id=org_id,
                        deployment_id=deployment_id, state=TaskState(state), attempt=attempt,
                        max_attempts=max_attempts, available_at=available_at, lease_owner=lease_owner,
                        lease_expires_at=lease_expires_at, cancel_requested=cancel_requested,
                        last_error=last_error, created_at=created_at, finished_at=finished_at)

    def close(self) -> None:
        """Stop the listener (the pool belongs to the caller)."""
        with self._listener_lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()


def _notify_payload(deployment_id: str | None) -> str:
    # pg8000 decodes notification payloads as ASCII; anything else wakes every waiter.
    if deployment_id is None or not deployment_id.isascii():
        return _WAKE_ALL
    return deployment_id


def _as_dict(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(loaded, dict):
        raise TypeError("a task payload is a JSON object")
    return loaded


def _from_epoch(seconds: float) -> datetime:
    # The hot statements return instants as epoch seconds: far cheaper to convert than
    # pg8000's text timestamps, which go through strptime.
    return datetime.fromtimestamp(seconds, tz=UTC)


def _claimed(fields: list[Any]) -> ClaimedTask:
    id_, kind, payload, run_id, org_id, deployment_id, attempt, lease_token, expires_at = fields
    return ClaimedTask(id=id_, kind=kind, payload=_as_dict(payload), run_id=run_id, org_id=org_id,
                       deployment_id=deployment_id, attempt=attempt, lease_token=lease_token,
                       lease_expires_at=_from_epoch(expires_at))
