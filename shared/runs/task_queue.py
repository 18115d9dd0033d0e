"""The task queue: at-least-once delivery of run tasks with leases, retries and cancellation.

A task moves through these states::

    queued ──claim──▶ leased ──complete──▶ done
      ▲                 │ ├──fail (retryable, attempts left)──▶ queued (available after a backoff)
      │                 │ ├──fail (not retryable / no attempts left)──▶ dead
      │                 │ └──fail or expired lease after a cancel request──▶ cancelled
      └─lease expired───┘   (the next claim takes it again: redelivery with attempt + 1)
    queued ──request_cancel──▶ cancelled

Every claim issues a fresh lease token; ``heartbeat``, ``complete`` and ``fail`` only act for
the holder of the current token, so a worker whose lease expired and was re-claimed elsewhere
cannot finish or extend the task it lost. PostgreSQL keeps this state in both modes (see
``docs/QUEUE.md``); the gcp adapter only adds push delivery through Cloud Tasks.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.kernel.db.statements import Statements
from shared.kernel.errors import Conflict, ErrorCode


class TaskState(enum.StrEnum):
    """Where a task is in its life; ``done``, ``dead`` and ``cancelled`` are final."""

    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the task can no longer change."""
        return self in (TaskState.DONE, TaskState.DEAD, TaskState.CANCELLED)


class LeaseLost(Conflict):
    """The caller's lease token is no longer the task's current lease (expired and re-claimed,
    or the task already finished)."""

    code = ErrorCode.LEASE_LOST


@dataclass(frozen=True)
class ClaimedTask:
    """A task handed to one worker until ``lease_expires_at`` (extend it with ``heartbeat``)."""

    id: str
    kind: str
    payload: dict[str, Any]
    run_id: str | None
    org_id: str
    deployment_id: str | None
    attempt: int
    lease_token: str
    lease_expires_at: datetime


@dataclass(frozen=True)
class HeartbeatResult:
    """Whether the lease was extended, and whether someone asked to cancel the task."""

    ok: bool
    cancel_requested: bool
    lease_expires_at: datetime | None


@dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task, as ``get`` reports it (never the lease token)."""

    id: str
    kind: str
    payload: dict[str, Any]
    run_id: str | None
    org_id: str
    deployment_id: str | None
    state: TaskState
    attempt: int
    max_attempts: int
    available_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts.

    The nominal delay after attempt ``n`` (1-based) is ``base_seconds * factor ** (n - 1)``
    capped at ``cap_seconds``. Jitter only shortens it, by up to ``jitter`` of itself, so the
    cap is a hard upper bound and a burst of failures spreads out instead of retrying in step.
    """

    base_seconds: float = 2.0
    factor: float = 2.0
    cap_seconds: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError("backoff delays must not be negative")
        if self.factor < 1:
            raise ValueError("the backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")

    def nominal(self, attempt: int) -> float:
        """The delay before the retry that follows failed attempt ``attempt``, before jitter."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        if self.factor == 1 or self.base_seconds == 0:
            return min(self.base_seconds, self.cap_seconds)
        # Multiply step by step, stopping at the cap: factor ** n overflows for large n.
        delay = self.base_seconds
        for _ in range(attempt - 1):
            delay *= self.factor
            if delay >= self.cap_seconds:
                return self.cap_seconds
        return min(delay, self.cap_seconds)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered delay: within ``[nominal * (1 - jitter), nominal]``."""
        nominal = self.nominal(attempt)
        draw = (rng or _rng).random()
        return nominal * (1.0 - self.jitter * draw)


_rng = random.Random()  # noqa: S311 - jitter, not security


class TaskQueue(Protocol):
    """At-least-once task delivery with leases (see the module docstring for the states)."""

    def enqueue(self, tx: Statements | None, *, kind: str, payload: dict[str, Any], run_id: str | None,
                org_id: str, deployment_id: str | None, max_attempts: int = 5,
                available_at: datetime | None = None) -> str:
        """Add a task and return its id.

        With ``tx`` the task is written in the caller's transaction, so a run record and its
        task commit (or roll back) together; workers are woken when that transaction commits.
        ``available_at`` delays the first delivery.
        """
        ...

    def claim_next(self, *, deployment_id: str | None, worker_id: str, lease_seconds: int,
                   wait_seconds: float) -> ClaimedTask | None:
        """Lease the next available task (of ``deployment_id``, or of any deployment for None).

        Waits up to ``wait_seconds`` for one to become available, returning as soon as it is;
        None when the wait ran out. Tasks whose lease expired are available again: claiming
        one is the redelivery, with ``attempt`` one higher and a new lease token.
        """
        ...

    def claim_batch(self, *, deployment_id: str | None, worker_id: str, lease_seconds: int,
                    wait_seconds: float, limit: int) -> list[ClaimedTask]:
        """Lease up to ``limit`` available tasks at once (the longest due first), each with its own lease.

        Waits as ``claim_next`` does for the first one; an empty list when the wait ran out.
        For consumers of many short tasks: one round trip leases the whole batch.
        """
        ...

    def heartbeat(self, task_id: str, lease_token: str, lease_seconds: int) -> HeartbeatResult:
        """Extend the lease to ``lease_seconds`` from now; ``ok`` is False if it was lost."""
        ...

    def complete(self, task_id: str, lease_token: str) -> bool:
        """Mark the task done; False (and nothing changes) if the lease was lost."""
        ...

    def complete_in(self, tx: Statements, task_id: str, lease_token: str) -> None:
        """Mark the task done inside the caller's transaction, so that it commits (or rolls
        back) with the caller's own change; nothing changes if the lease was lost. The answer is
        not waited for: the statement may travel with the transaction's commit."""
        ...

    def complete_many(self, leases: Sequence[tuple[str, str]]) -> set[str]:
        """Complete every ``(task_id, lease_token)`` whose lease is current, at once; returns
        the ids completed (the others, whose lease was lost, are left unchanged)."""
        ...

    def fail(self, task_id: str, lease_token: str, error: str, retryable: bool) -> TaskState:
        """Record a failed attempt and return the new state.

        ``queued`` (to be retried after the policy's backoff) while attempts remain and the
        error is retryable, ``dead`` otherwise, ``cancelled`` if a cancel was requested.
        Raises ``LeaseLost`` if the lease was lost.
        """
        ...

    def request_cancel(self, task_id: str) -> TaskState | None:
        """Ask for cancellation; returns the state afterwards (None: no such task).

        A queued task (or one whose lease already expired) is cancelled at once; a leased one
        stays leased with ``cancel_requested`` set, which its worker sees in ``heartbeat``.
        """
        ...

    def get(self, task_id: str) -> TaskInfo | None:
        """The task's current state, or None."""
        ...

    def close(self) -> None:
        """Stop background listeners and release connections."""
        ...
