"""The gcp mode's task queue: PostgreSQL (Cloud SQL) keeps the state, Cloud Tasks delivers.

Leases, attempts, retries and cancellation are exactly the ``PgTaskQueue``'s: the ``tasks``
table stays the source of truth. What Cloud Tasks adds is push delivery: for every delivery
attempt of a task (the first, each retry after a backoff, each redelivery after an expired
lease) one HTTP task is created that POSTs a small JSON body to the dispatch target, which
starts a worker (a Cloud Run job execution) that then claims from the queue as usual.

Cloud Tasks task names are derived from the run id, the task id and the delivery attempt, so
creating the same delivery twice (a retried RPC, two relays racing) is answered with
``AlreadyExists`` and treated as success: Cloud Tasks then delivers it once.

A push cannot join a PostgreSQL transaction. It is created before the enqueueing transaction
commits (so a failed push rolls the run back instead of leaving it undelivered) and the
target treats a task id it cannot see yet as "retry later" (``docs/QUEUE.md``). Redeliveries
after an expired lease have no event to hang on: ``relay()``, run on a schedule, pushes them.

The Google client is imported lazily, inside the methods that need it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.kernel.db.queries import Queries
from shared.kernel.db.statements import Statements
from shared.runs.adapters.pg_task_queue import PgTaskQueue
from shared.runs.task_queue import ClaimedTask, HeartbeatResult, TaskInfo, TaskState

_log = logging.getLogger(__name__)

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_Q = Queries("shared.runs.adapters", "task_queue.sql")


def cloud_task_name(run_id: str | None, task_id: str, attempt: int) -> str:
    """The Cloud Tasks task id of delivery ``attempt`` of a task.

    A short hash comes first because Cloud Tasks indexes names lexically and the platform's
    ids start with a timestamp; the run id keeps names searchable in the console; the task id
    keeps two tasks of one run (a resumed run) apart.
    """
    digest = hashlib.sha256(f"{task_id}:{attempt}".encode()).hexdigest()[:8]
    run = _NAME_UNSAFE.sub("_", run_id or "norun")[:200]
    return f"{digest}-{run}-{_NAME_UNSAFE.sub('_', task_id)}-{attempt}"


class CloudTasksQueue:
    """``TaskQueue`` for gcp mode: ``state`` (PostgreSQL) for leases, Cloud Tasks for delivery.

    ``queue_path`` is ``projects/P/locations/L/queues/Q``; ``target_url`` is the dispatch
    function, called with an OIDC token for ``service_account_email`` (audience
    ``audience``, by default the URL). Only tasks whose kind is in ``push_kinds`` are pushed
    (None: all): tasks for data planes that poll (BYOC) must not start a Cloud Run worker.
    ``emulator_host`` ("host:port") talks plain gRPC to a local emulator instead of Google.
    """

    def __init__(self, state: PgTaskQueue, *, queue_path: str, target_url: str,
                 service_account_email: str, audience: str | None = None,
                 push_kinds: frozenset[str] | None = None, client: Any | None = None,
                 emulator_host: str | None = None) -> None:
        self.state = state
        self.queue_path = queue_path
        self.target_url = target_url
        self.service_account_email = service_account_email
        self.audience = audience or target_url
        self.push_kinds = push_kinds
        self._client = client
        self._owns_client = client is None
        self._emulator_host = emulator_host
        self._client_lock = threading.Lock()

    # -- Cloud Tasks -----------------------------------------------------------
    def client(self) -> Any:
        """The ``CloudTasksClient``, created on first use."""
        with self._client_lock:
            if self._client is None:
                from google.cloud import tasks_v2  # noqa: PLC0415 - heavy, gcp mode only

                if self._emulator_host is not None:
                    import grpc  # noqa: PLC0415
                    from google.cloud.tasks_v2.services.cloud_tasks.transports import (  # noqa: PLC0415
                        CloudTasksGrpcTransport,
                    )

                    channel = grpc.insecure_channel(self._emulator_host)
                    self._client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
                else:
                    self._client = tasks_v2.CloudTasksClient()
            return self._client

    def _pushes(self, kind: str) -> bool:
        return self.push_kinds is None or kind in self.push_kinds

    def push(self, *, task_id: str, kind: str, run_id: str | None, org_id: str, deployment_id: str | None,
             attempt: int, schedule_time: datetime | None = None) -> str:
        """Create the Cloud Task for delivery ``attempt``; returns its full name.

        Creating a delivery that already exists succeeds (it is the same delivery).
        """
        from google.api_core import exceptions as google_errors  # noqa: PLC0415
        from google.cloud import tasks_v2  # noqa: PLC0415

        name = f"{self.queue_path}/tasks/{cloud_task_name(run_id, task_id, attempt)}"
        body = {"task_id": task_id, "kind": kind, "run_id": run_id, "org_id": org_id,
                "deployment_id": deployment_id, "attempt": attempt}
        task = tasks_v2.Task(
            name=name,
            http_request=tasks_v2.HttpRequest(
                url=self.target_url,
                http_method=tasks_v2.HttpMethod.POST,
                headers={"Content-Type": "application/json"},
                body=json.dumps(body, separators=(",", ":")).encode(),
                oidc_token=tasks_v2.OidcToken(service_account_email=self.service_account_email,
                                              audience=self.audience),
            ),
        )
        if schedule_time is not None:
            task.schedule_time = schedule_time
        try:
            self.client().create_task(parent=self.queue_path, task=task)
        except google_errors.AlreadyExists:
            _log.info("cloud task %s already exists; delivery already scheduled", name)
        return name

    def _mark_pushed(self, tx: Statements, task_id: str, attempt: int) -> None:
        tx.execute(_Q.mark_pushed, attempt, task_id)

    # -- TaskQueue ---------------------------------------------------------------
    def enqueue(self, tx: Statements | None, *, kind: str, payload: dict[str, Any], run_id: str | None,
                org_id: str, deployment_id: str | None, max_attempts: int = 5,
                available_at: datetime | None = None) -> str:
        """Write the task (in ``tx`` when given) and push its first delivery before the commit."""
        if tx is None:
            with self.state.db.transaction() as own:
                return self.enqueue(own, kind=kind, payload=payload, run_id=run_id, org_id=org_id,
                                    deployment_id=deployment_id, max_attempts=max_attempts,
                                    available_at=available_at)
        task_id = self.state.enqueue(tx, kind=kind, payload=payload, run_id=run_id, org_id=org_id,
                                     deployment_id=deployment_id, max_attempts=max_attempts,
                                     available_at=available_at)
        tx.flush()  # the row exists before its delivery is pushed
        if self._pushes(kind):
            self.push(task_id=task_id, kind=kind, run_id=run_id, org_id=org_id, deployment_id=deployment_id,
                      attempt=1, schedule_time=available_at)
            self._mark_pushed(tx, task_id, 1)
        return task_id

    def claim_next(self, *, deployment_id: str | None, worker_id: str, lease_seconds: int,
                   wait_seconds: float) -> ClaimedTask | None:
        """Claim from PostgreSQL (the worker a push started, or a polling data plane)."""
        return self.state.claim_next(deployment_id=deployment_id, worker_id=worker_id,
                                     lease_seconds=lease_seconds, wait_seconds=wait_seconds)

    def claim_batch(self, *, deployment_id: str | None, worker_id: str, lease_seconds: int,
                    wait_seconds: float, limit: int) -> list[ClaimedTask]:
        """Claim up to ``limit`` tasks from PostgreSQL."""
        return self.state.claim_batch(deployment_id=deployment_id, worker_id=worker_id,
                                      lease_seconds=lease_seconds, wait_seconds=wait_seconds, limit=limit)

    def heartbeat(self, task_id: str, lease_token: str, lease_seconds: int) -> HeartbeatResult:
        """Extend the lease (PostgreSQL)."""
        return self.state.heartbeat(task_id, lease_token, lease_seconds)

    def complete(self, task_id: str, lease_token: str) -> bool:
        """Mark done (PostgreSQL)."""
        return self.state.complete(task_id, lease_token)

    def complete_in(self, tx: Statements, task_id: str, lease_token: str) -> None:
        """Mark done in the caller's transaction (PostgreSQL)."""
        self.state.complete_in(tx, task_id, lease_token)

    def complete_many(self, leases: Sequence[tuple[str, str]]) -> set[str]:
        """Mark done in one statement (PostgreSQL)."""
        return self.state.complete_many(leases)

    def fail(self, task_id: str, lease_token: str, error: str, retryable: bool) -> TaskState:
        """Record the failure; a retry is pushed at once, scheduled for the end of its backoff."""
        new_state = self.state.fail(task_id, lease_token, error, retryable)
        if new_state is TaskState.QUEUED:
            info = self.state.get(task_id)
            if info is not None and self._pushes(info.kind):
                try:
                    self._push_next(info)
                except Exception:  # noqa: BLE001 - the failure is recorded; relay() pushes it when due
                    _log.warning("could not push the retry of task %s; relay will", task_id, exc_info=True)
        return new_state

    def _push_next(self, info: TaskInfo) -> None:
        attempt = info.attempt + 1
        self.push(task_id=info.id, kind=info.kind, run_id=info.run_id, org_id=info.org_id,
                  deployment_id=info.deployment_id, attempt=attempt, schedule_time=info.available_at)
        with self.state.db.transaction() as tx:
            self._mark_pushed(tx, info.id, attempt)

    def request_cancel(self, task_id: str) -> TaskState | None:
        """Cancel (PostgreSQL); a push already made finds nothing to claim."""
        return self.state.request_cancel(task_id)

    def get(self, task_id: str) -> TaskInfo | None:
        """The task's state (PostgreSQL)."""
        return self.state.get(task_id)

    def relay(self, *, limit: int = 500) -> int:
        """Push the due deliveries nobody pushed yet (expired leases, failed pushes).

        Run it on a schedule (each minute): an expired lease is not an event anything else
        sees. Returns how many deliveries were pushed.
        """
        kinds = sorted(self.push_kinds) if self.push_kinds is not None else None
        sql = _Q.due_for_push.format(kind_filter="" if kinds is None else _Q.push_kind_filter)
        args: list[Any] = [] if kinds is None else [kinds]
        with self.state.db.transaction() as tx:
            due = tx.fetch_all(sql, *args, limit)
        pushed = 0
        for row in due:
            attempt = int(row["attempt"]) + 1
            self.push(task_id=row["id"], kind=row["kind"], run_id=row["run_id"], org_id=row["org_id"],
                      deployment_id=row["deployment_id"], attempt=attempt)
            with self.state.db.transaction() as tx:
                self._mark_pushed(tx, row["id"], attempt)
            pushed += 1
        return pushed

    def close(self) -> None:
        """Stop the PostgreSQL listener and close the Cloud Tasks channel."""
        self.state.close()
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None and self._owns_client:
            client.transport.close()
