"""Agent runs: creating them, delivering them to data planes, recording their logs and outcome.

The run row is the source of truth for a run's outcome; the task queue is the source of truth for
its delivery (leases, attempts, backoff). One task serves one run for its whole life. The two are
kept consistent by ordering where they cannot share a transaction (the queue is a port and may
push through Cloud Tasks), and by one transaction where they can:

* a run and its task are created in one transaction;
* a claim leases the task first, then moves the run to ``running`` under the run's row lock and
  records the SHA-256 of the lease token on it; a claimed task whose run already finished is
  closed at once and the claim looks again;
* a completion is recorded on the run (under its row lock, only for the lease the run holds, only
  once per lease); a success settles its task in the same transaction (``complete_in``), any
  other outcome settles it afterwards (``fail``: the queue decides on backoff and attempts). A
  retried completion of the same lease replays the recorded answer and settles the task again,
  so a crash between the two steps heals itself on the retry (or, without a retry, on
  redelivery);
* ``reconcile`` (scheduled) closes unfinished runs whose task ended without them, e.g. a lease
  that expired on the last attempt.

See docs/RUNS.md for the life cycle.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jsonschema

from shared.audit import AuditLog
from shared.catalog import AgentManifest
from shared.deployments import DeploymentStatus
from shared.identity import ANY_MEMBER, RUNNERS, Need, OrgService, Principal, Role, decide
from shared.kernel.db.database import ASYNC_COMMIT, Database, Deferred, Row, Tx
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.jsonlog import redact, redact_text
from shared.kernel.pagination import decode_cursor, encode_cursor
from shared.runs.models import (
    FINAL_STATUSES,
    CheckpointIn,
    CheckpointWritesIn,
    CompleteIn,
    LogLineIn,
    RunStatus,
)
from shared.runs.task_queue import ClaimedTask, HeartbeatResult, LeaseLost, TaskQueue, TaskState

_log = logging.getLogger(__name__)

TASK_KIND = "agent_run"
DEFAULT_MAX_ATTEMPTS = 3
#: Deployment states a run may be created in. ``upgrade_pending_consent`` keeps running the
#: version installed before the upgrade, so its runs go on while the admin decides.
RUNNABLE_DEPLOYMENTS = frozenset({DeploymentStatus.READY, DeploymentStatus.UPGRADE_PENDING_CONSENT})

_RUN_COLUMNS = ("r.id, r.org_id, r.agent_id, r.deployment_id, r.version, r.status, r.inputs, r.outputs, r.error, "
                "r.metrics, r.task_id, r.attempt, r.max_attempts, r.cancel_requested, r.lease_hash, r.worker, "
                "r.completion_lease, r.completion, r.created_by, r.created_at, r.updated_at, r.started_at, "
                "r.finished_at")
_RETURNING = _RUN_COLUMNS.replace("r.", "")
# What a data plane's call needs of its run (lease checks, completion): no inputs, outputs or times.
_LEASE_COLUMNS = ("r.id, r.org_id, r.agent_id, r.deployment_id, r.version, r.status, r.task_id, r.attempt, "
                  "r.max_attempts, r.cancel_requested, r.lease_hash, r.completion_lease, r.completion")

# A delivery starts the run: $attempt, $lease_hash, $worker, $task_id, $run_id, $deployment_id.
# It commits asynchronously, as the claim before it does: if the database crashed before the
# WAL reached the disk the run would still be queued under an older lease, its worker's logs and
# completion would be refused (LeaseLost) and the task, once its lease ran out, delivered again.
_START = f"""
UPDATE runs r SET status = 'running', attempt = %s, lease_hash = %s, worker = %s, task_id = %s,
                  started_at = coalesce(r.started_at, now()), updated_at = now()
FROM deployments d
WHERE r.id = %s AND r.deployment_id = %s AND d.id = r.deployment_id AND r.status IN ('queued', 'running')
  AND {ASYNC_COMMIT}
RETURNING r.id, r.agent_id, r.version, r.inputs, r.max_attempts, r.cancel_requested,
          d.config AS deployment_config, d.granted_permissions AS deployment_grants,
          (SELECT coalesce(max(l.seq), 0) + 1 FROM run_logs l WHERE l.run_id = r.id) AS next_log_seq
"""

# One statement for a whole batch; ``fields`` travels as text and is cast per row.
_INSERT_LOGS = """
INSERT INTO run_logs (run_id, seq, ts, level, step, message, fields, attempt)
SELECT %s, u.seq, u.ts, u.level, u.step, u.message, u.fields::jsonb, %s
FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS u(seq, ts, level, step, message, fields)
ON CONFLICT (run_id, seq) DO NOTHING
"""


class RunEvents(Protocol):
    """Where run outcomes are announced (webhooks), inside the transaction that records them."""

    def __call__(self, tx: Tx, *, org_id: str, event: str, data: dict[str, Any]) -> object:
        """Record ``event`` for ``org_id``; it commits or rolls back with the run's change."""
        ...


@dataclass(frozen=True)
class LeasedRun:
    """A claimed task with everything its data plane needs to execute the run."""

    task: ClaimedTask
    run: Row  # id, agent_id, version, inputs, max_attempts, cancel_requested
    config: dict[str, Any]
    granted_permissions: list[str]
    manifest: dict[str, Any]  # the run's version, as published
    next_log_seq: int


@dataclass(frozen=True)
class _Version:
    manifest: AgentManifest
    manifest_json: dict[str, Any]
    inputs_validator: jsonschema.protocols.Validator


_VERSION_CACHE_SIZE = 512


def lease_hash(token: str) -> str:
    """What the run stores of a lease token."""
    return hashlib.sha256(token.encode()).hexdigest()


def input_problems(manifest: AgentManifest, inputs: dict[str, Any], *,
                   validator: jsonschema.protocols.Validator | None = None) -> list[dict[str, str]]:
    """Every way ``inputs`` breaks the manifest's input schema, with ``inputs.<path>`` paths."""
    validator = validator or jsonschema.Draft202012Validator(manifest.inputs)
    problems = []
    for error in sorted(validator.iter_errors(inputs), key=lambda e: [str(p) for p in e.absolute_path]):
        path = "inputs" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append({"path": path, "message": error.message})
    return problems


def _row(changed: Deferred) -> Row:
    row = changed.one()
    assert row is not None, "a run updated by id is there"
    return row


def _event_for(status: RunStatus) -> str:
    return {RunStatus.SUCCEEDED: "run.completed", RunStatus.CANCELLED: "run.cancelled"}.get(status, "run.failed")


class RunService:
    """Runs for users (create, read, list, cancel, logs) and for data planes (claim, heartbeat, logs,
    checkpoints, complete). Every change to a run is audited in the transaction that makes it."""

    def __init__(self, db: Database, audit: AuditLog, orgs: OrgService, queue: TaskQueue, *,
                 events: RunEvents | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.db = db
        self.audit = audit
        self.orgs = orgs
        self.queue = queue
        self.events = events
        self.max_attempts = max_attempts
        self._versions: collections.OrderedDict[tuple[str, str], _Version] = collections.OrderedDict()
        self._versions_lock = threading.Lock()

    # -- lookups ---------------------------------------------------------------------------------
    @staticmethod
    def _agent_clause(agent_ref: str) -> str:
        # Listings are addressed by id ("agt_...") or by name (a slug), as in the catalog.
        column = "id" if agent_ref.startswith("agt_") else "name"
        return f"EXISTS (SELECT 1 FROM agents a WHERE a.id = r.agent_id AND a.{column} = %s)"

    def _load(self, tx: Tx, run_id: str, agent_ref: str, *, lock: bool = False, columns: str = _RUN_COLUMNS) -> Row:
        row = tx.fetch_one(f"SELECT {columns} FROM runs r WHERE r.id = %s AND {self._agent_clause(agent_ref)}"
                           + (" FOR UPDATE OF r" if lock else ""), run_id, agent_ref)
        if row is None:
            raise NotFound("run not found")
        return row

    def _readable(self, principal: Principal, agent_ref: str, run_id: str) -> tuple[Row, Role]:
        with self.db.read() as tx:
            row = self._load(tx, run_id, agent_ref)
        role = self.orgs.role_of(principal, row["org_id"])
        denied = decide(principal, Need(roles=ANY_MEMBER, unknown="run not found"), role)
        if denied is not None:
            raise denied  # a non-member never learns that another org's run exists
        assert role is not None
        return row, role

    def _version(self, tx: Tx, agent_id: str, version: str) -> _Version:
        """A published version's manifest, its JSON and its inputs validator.

        Versions are immutable, so they are cached: parsing a manifest and compiling its schemas
        costs more than everything else a run's creation or claim does.
        """
        key = (agent_id, version)
        with self._versions_lock:
            cached = self._versions.get(key)
            if cached is not None:
                self._versions.move_to_end(key)
                return cached
        found = tx.fetch_val("SELECT manifest FROM agent_versions WHERE agent_id = %s AND version = %s",
                             agent_id, version)
        if found is None:
            raise NotFound(f"version {version} of the agent is gone")
        manifest = AgentManifest.model_validate(found)
        loaded = _Version(manifest, manifest.model_dump(mode="json"),
                          jsonschema.Draft202012Validator(manifest.inputs))
        with self._versions_lock:
            self._versions[key] = loaded
            while len(self._versions) > _VERSION_CACHE_SIZE:
                self._versions.popitem(last=False)
        return loaded

    @staticmethod
    def _dataplane(principal: Principal) -> tuple[str, str]:
        if not principal.deployment_id or not principal.key_org_id:
            raise NotFound("this credential belongs to no deployment")
        return principal.deployment_id, principal.key_org_id

    def _dataplane_run(self, tx: Tx, principal: Principal, agent_ref: str, run_id: str, *,
                       lock: bool = False) -> Row:
        deployment_id, _ = self._dataplane(principal)
        row = self._load(tx, run_id, agent_ref, lock=lock, columns=_LEASE_COLUMNS)
        if row["deployment_id"] != deployment_id:
            raise NotFound("run not found")  # a data plane sees its own deployment's runs only
        return row

    # -- users -------------------------------------------------------------------------------------
    def create(self, principal: Principal, agent_ref: str, deployment_id: str, inputs: dict[str, Any]) -> Row:
        """Create a queued run of a deployment and enqueue its task, in one transaction."""
        user_id = principal.subject if principal.kind == "user" else None
        with self.db.read() as tx:
            # Looked up across orgs only to learn its org; membership decides what the caller sees.
            # A user's role in that org comes in the same statement.
            deployment = tx.fetch_one(
                "SELECT d.id, d.org_id, d.agent_id, d.version, d.status, a.name AS agent_name, "
                "(SELECT m.role FROM memberships m WHERE m.org_id = d.org_id AND m.user_id = %s) AS member_role "
                "FROM deployments d JOIN agents a ON a.id = d.agent_id WHERE d.id = %s", user_id, deployment_id)
        role: Role | None = None
        if deployment is not None and user_id is not None:
            role = Role(deployment["member_role"]) if deployment["member_role"] else None
        elif deployment is not None:
            role = self.orgs.role_of(principal, deployment["org_id"])  # an API key: no query
        if deployment is None:
            raise NotFound("deployment not found")
        denied = decide(principal, Need(roles=RUNNERS, doing="start runs (operator or admin required)",
                                        unknown="deployment not found"), role)
        if denied is not None:
            raise denied
        if agent_ref not in (deployment["agent_id"], deployment["agent_name"]):
            raise NotFound("this deployment does not run that agent")
        if deployment["status"] not in RUNNABLE_DEPLOYMENTS:
            raise Conflict(f"the deployment is {deployment['status']}; runs need a ready deployment",
                           code=ErrorCode.DEPLOYMENT_NOT_READY)
        with self.db.transaction() as tx:
            version = self._version(tx, deployment["agent_id"], deployment["version"])
            problems = input_problems(version.manifest, inputs, validator=version.inputs_validator)
            if problems:
                raise Unprocessable("the inputs do not match the agent's input schema", details=problems)
            run_id = new_id("run")
            # The task first (its table has no foreign key to runs): the run then records its id.
            task_id = self.queue.enqueue(tx, kind=TASK_KIND, payload={"run_id": run_id}, run_id=run_id,
                                         org_id=deployment["org_id"], deployment_id=deployment_id,
                                         max_attempts=self.max_attempts)
            # Held back with the task and the audit entry: the transaction is one round trip.
            created = tx.defer("INSERT INTO runs (id, org_id, agent_id, deployment_id, version, inputs, max_attempts, "
                                "created_by, task_id) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s) "
                                f"RETURNING {_RETURNING}",
                                run_id, deployment["org_id"], deployment["agent_id"], deployment_id,
                                deployment["version"], json.dumps(inputs), self.max_attempts, principal.actor, task_id)
            self.audit.append(tx, org_id=deployment["org_id"], actor=principal.actor, action="run.created",
                              target=run_id, details={"agent_id": deployment["agent_id"],
                                                      "deployment_id": deployment_id,
                                                      "version": deployment["version"], "task_id": task_id})
        row = created.one()
        assert row is not None
        return row

    def get(self, principal: Principal, agent_ref: str, run_id: str) -> Row:
        """A run, for any member of its org."""
        return self._readable(principal, agent_ref, run_id)[0]

    def page(self, org_id: str, *, limit: int, cursor: str | None, status: str | None = None,
             agent_id: str | None = None, deployment_id: str | None = None) -> tuple[list[Row], str | None]:
        """The org's runs, newest first, keyset-paginated."""
        after = decode_cursor(cursor, required=("created_at", "id"))
        clauses, args = ["r.org_id = %s"], [org_id]
        if status:
            clauses.append("r.status = %s")
            args.append(status)
        if agent_id:
            clauses.append(self._agent_clause(agent_id))
            args.append(agent_id)
        if deployment_id:
            clauses.append("r.deployment_id = %s")
            args.append(deployment_id)
        if after:
            clauses.append("(r.created_at, r.id) < (%s::timestamptz, %s)")
            args += [after["created_at"], after["id"]]
        with self.db.read() as tx:
            rows = tx.fetch_all(f"SELECT {_RUN_COLUMNS} FROM runs r WHERE {' AND '.join(clauses)} "
                                "ORDER BY r.created_at DESC, r.id DESC LIMIT %s", *args, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor({"created_at": rows[-1]["created_at"].isoformat(), "id": rows[-1]["id"]}
                                    ) if more else None
        return rows, next_cursor

    def cancel(self, principal: Principal, agent_ref: str, run_id: str) -> Row:
        """Cancel a run, whatever its state (idempotent).

        Queued: cancelled at once, with its task. Running: flagged; the worker sees the flag at its
        next heartbeat, stops between steps and reports ``cancelled`` (a worker that is gone has no
        live lease, and then the run is cancelled at once). Finished: nothing changes.
        """
        row, role = self._readable(principal, agent_ref, run_id)
        denied = decide(principal, Need(roles=RUNNERS, doing="cancel runs (operator or admin required)"), role)
        if denied is not None:
            raise denied
        if RunStatus(row["status"]).final:
            return row
        changed: Deferred | None = None
        with self.db.transaction() as tx:
            row = self._load(tx, run_id, agent_ref, lock=True)
            status = RunStatus(row["status"])
            if status == RunStatus.QUEUED:
                changed = self._finish(tx, row, RunStatus.CANCELLED, actor=principal.actor,
                                       error=f"cancelled by {principal.actor} before it started",
                                       extra={"cancel_requested": True}, returning=True)
            elif status == RunStatus.RUNNING and not row["cancel_requested"]:
                changed = self._update(tx, run_id, cancel_requested=True, returning=True)
                self.audit.append(tx, org_id=row["org_id"], actor=principal.actor, action="run.cancel_requested",
                                  target=run_id, details={"attempt": row["attempt"]})
        if changed is not None:
            row = _row(changed)
        if row["task_id"] is None:
            return row
        task_state = self.queue.request_cancel(row["task_id"])
        if row["status"] == RunStatus.RUNNING and task_state == TaskState.CANCELLED:
            # No live lease: nobody is working on the run, so nobody would report the cancel.
            changed = None
            with self.db.transaction() as tx:
                row = self._load(tx, run_id, agent_ref, lock=True)
                if row["status"] == RunStatus.RUNNING:
                    changed = self._finish(tx, row, RunStatus.CANCELLED, actor=principal.actor,
                                           error=f"cancelled by {principal.actor}; its worker had stopped",
                                           returning=True)
            if changed is not None:
                row = _row(changed)
        return row

    def log_page(self, principal: Principal, agent_ref: str, run_id: str, *, after_seq: int, limit: int
                 ) -> list[Row]:
        """Log lines of a run after ``after_seq`` (members of the run's org)."""
        self._readable(principal, agent_ref, run_id)
        return self.read_logs(run_id, after_seq=after_seq, limit=limit)

    def read_logs(self, run_id: str, *, after_seq: int, limit: int) -> list[Row]:
        """Log lines after ``after_seq``, in order (no access check: callers checked already)."""
        with self.db.read() as tx:
            return tx.fetch_all("SELECT seq, ts, level, step, message, fields, attempt FROM run_logs "
                                "WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s", run_id, after_seq, limit)

    def status_of(self, run_id: str) -> RunStatus:
        """A run's current status (no access check)."""
        with self.db.read() as tx:
            status = tx.fetch_val("SELECT status FROM runs WHERE id = %s", run_id)
        if status is None:
            raise NotFound("run not found")
        return RunStatus(status)

    # -- data plane: delivery --------------------------------------------------------------------
    def claim(self, principal: Principal, *, worker: str, wait_seconds: float, lease_seconds: int
              ) -> LeasedRun | None:
        """Lease the deployment's next run, waiting up to ``wait_seconds``; the run becomes ``running``."""
        deployment_id, _ = self._dataplane(principal)
        deadline = time.monotonic() + wait_seconds
        while True:
            task = self.queue.claim_next(deployment_id=deployment_id, worker_id=worker, lease_seconds=lease_seconds,
                                         wait_seconds=max(0.0, deadline - time.monotonic()))
            if task is None:
                return None
            leased = self._start(task, worker)
            if leased is not None:
                return leased

    def _start(self, task: ClaimedTask, worker: str) -> LeasedRun | None:
        # One statement, in autocommit: the UPDATE locks the run and re-checks its status, so a
        # cancel or a completion that committed first wins and the run is not started again.
        with self.db.read() as tx:
            run = tx.fetch_one(_START, task.attempt, lease_hash(task.lease_token), worker[:200], task.id,
                               task.run_id, task.deployment_id)
            if run is not None:
                return LeasedRun(task=task, run=run, config=run.pop("deployment_config"),
                                 granted_permissions=list(run.pop("deployment_grants")),
                                 manifest=self._version(tx, run["agent_id"], run["version"]).manifest_json,
                                 next_log_seq=int(run.pop("next_log_seq")))
            found = tx.fetch_one("SELECT status, deployment_id FROM runs WHERE id = %s", task.run_id)
        stale = RunStatus.FAILED
        if found is not None and found["deployment_id"] == task.deployment_id and RunStatus(found["status"]).final:
            stale = RunStatus(found["status"])
        # Finished before this delivery (a completion recorded just before a crash, or a cancel
        # racing the claim), or gone: close the task so that it is not delivered again.
        self._settle(task.id, task.lease_token, stale, error=f"the run is already {stale.value}")
        return None

    def heartbeat(self, principal: Principal, task_id: str, lease_token: str, lease_seconds: int) -> HeartbeatResult:
        """Extend a lease; ``LeaseLost`` (409) when it is no longer the caller's."""
        deployment_id, _ = self._dataplane(principal)
        info = self.queue.get(task_id)
        if info is None or info.deployment_id != deployment_id:
            raise NotFound("task not found")
        result = self.queue.heartbeat(task_id, lease_token, lease_seconds)
        if not result.ok:
            raise LeaseLost(f"task {task_id}: the lease was lost (expired and delivered again, or finished)")
        return result

    def _holder(self, tx: Tx, principal: Principal, agent_ref: str, run_id: str, lease_token: str, *,
                lock: bool = False) -> Row:
        run = self._dataplane_run(tx, principal, agent_ref, run_id, lock=lock)
        if run["lease_hash"] != lease_hash(lease_token):
            raise LeaseLost(f"run {run_id}: this lease no longer holds the run")
        return run

    # -- data plane: logs ------------------------------------------------------------------------
    def append_logs(self, principal: Principal, agent_ref: str, run_id: str, lease_token: str,
                    lines: Sequence[LogLineIn]) -> tuple[int, int]:
        """Store a batch of log lines (redacted); returns (accepted, duplicates already stored)."""
        with self.db.transaction() as tx:
            run = self._holder(tx, principal, agent_ref, run_id, lease_token)
            count = tx.execute(_INSERT_LOGS, run_id, run["attempt"] or 1,
                               [line.seq for line in lines], [line.ts for line in lines],
                               [line.level for line in lines], [line.step for line in lines],
                               [redact_text(line.message) for line in lines],
                               [json.dumps(redact(line.fields), default=str) for line in lines])
        return count, len(lines) - count

    # -- data plane: completion --------------------------------------------------------------------
    def complete(self, principal: Principal, agent_ref: str, run_id: str, report: CompleteIn
                 ) -> tuple[dict[str, Any], bool]:
        """Record a run's outcome once per lease; returns (the answer, whether it is a replay).

        ``failed`` with ``retryable`` goes back to the queue while attempts remain (the run is
        ``queued`` again), then the run is ``dead``. A cancel request turns a failure into
        ``cancelled``.
        """
        token_hash = lease_hash(report.lease_token)
        with self.db.transaction() as tx:
            run = self._dataplane_run(tx, principal, agent_ref, run_id, lock=True)
            if run["completion_lease"] == token_hash:
                answer, replay = run["completion"], True
            else:
                if run["lease_hash"] != token_hash or run["task_id"] != report.task_id:
                    raise LeaseLost(f"run {run_id}: this lease no longer holds the run")
                if RunStatus(run["status"]).final:
                    raise Conflict(f"run {run_id} is already {run['status']}", code=ErrorCode.RUN_FINISHED)
                answer, replay = self._record(tx, principal, run, report, token_hash), False
                if answer["status"] == RunStatus.SUCCEEDED:
                    # A success settles its task in the same transaction: the run's writes and the
                    # task's go out with the commit, in one packet.
                    self.queue.complete_in(tx, report.task_id, report.lease_token)
        target = RunStatus(answer["status"])
        if target == RunStatus.SUCCEEDED and not replay:
            return answer, replay
        # Otherwise the queue decides (backoff, attempts left, a cancel); a replay settles again,
        # which heals a completion recorded before a crash that left its task leased.
        settled = self._settle(report.task_id, report.lease_token, target,
                               error=report.error or f"reported {report.status}", retryable=report.retryable)
        if target == RunStatus.QUEUED and settled not in (None, TaskState.QUEUED):
            # The queue decided otherwise (a cancel raced the failure): the run follows its task.
            answer = self._follow_task(run_id, token_hash, settled, report.error)
        return answer, replay

    def _record(self, tx: Tx, principal: Principal, run: Row, report: CompleteIn, token_hash: str
                ) -> dict[str, Any]:
        status = RunStatus(report.status)
        if status == RunStatus.FAILED:
            if run["cancel_requested"]:
                status = RunStatus.CANCELLED
            elif report.retryable:
                status = RunStatus.QUEUED if run["attempt"] < run["max_attempts"] else RunStatus.DEAD
        answer = {"run_id": run["id"], "status": status.value, "attempt": run["attempt"],
                  "retry_scheduled": status == RunStatus.QUEUED}
        error = redact_text(report.error) if report.error else None
        if status == RunStatus.QUEUED:
            self._update(tx, run["id"], status=status.value, error=error, completion_lease=token_hash,
                         completion=answer)
            self.audit.append(tx, org_id=run["org_id"], actor=principal.actor, action="run.retry_scheduled",
                              target=run["id"], details={"attempt": run["attempt"], "error": error})
            return answer
        if status == RunStatus.DEAD:
            error = f"gave up after {run['attempt']} attempts: {error}"
        metrics = {**report.metrics.model_dump(exclude_none=True), "attempts": run["attempt"]}
        self._finish(tx, run, status, actor=principal.actor, error=error, outputs=report.outputs,
                     metrics=metrics, extra={"completion_lease": token_hash, "completion": answer})
        return answer

    def _finish(self, tx: Tx, run: Row, status: RunStatus, *, actor: str, error: str | None = None,
                outputs: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None, returning: bool = False) -> Deferred:
        """Move a run to a final status: audited, announced, its checkpoints dropped. The writes
        are held back (``Tx.defer``); with ``returning`` the Deferred gives the run's row."""
        # Checkpoints exist to resume a redelivered run; a finished run is never resumed.
        finished_at = datetime.now(UTC)
        row = self._update(tx, run["id"], drop_checkpoints=True, returning=returning, status=status.value,
                           error=error, outputs=outputs, metrics=metrics, finished_at=finished_at, **(extra or {}))
        details: dict[str, Any] = {"attempt": run["attempt"], "error": error}
        if metrics is not None:
            details["metrics"] = metrics
        self.audit.append(tx, org_id=run["org_id"], actor=actor, action=f"run.{status.value}", target=run["id"],
                          details=details)
        if self.events is not None:
            self.events(tx, org_id=run["org_id"], event=_event_for(status), data={
                "run_id": run["id"], "agent_id": run["agent_id"], "deployment_id": run["deployment_id"],
                "version": run["version"], "status": status.value, "error": error, "metrics": metrics,
                "finished_at": finished_at.isoformat()})
        return row

    @staticmethod
    def _update(tx: Tx, run_id: str, *, drop_checkpoints: bool = False, returning: bool = False,
                **columns: Any) -> Deferred:
        """Update a run's columns, held back (``Tx.defer``); with ``returning`` the Deferred gives
        the row."""
        sets, args = ["updated_at = now()"], []
        # Data-modifying CTEs run whether or not the UPDATE refers to them: one round trip.
        prefix = ("WITH w AS (DELETE FROM run_checkpoint_writes WHERE run_id = %s), "
                  "c AS (DELETE FROM run_checkpoints WHERE run_id = %s) ") if drop_checkpoints else ""
        prefix_args = [run_id, run_id] if drop_checkpoints else []
        for column, value in columns.items():
            if column in ("outputs", "metrics", "completion"):
                sets.append(f"{column} = %s::jsonb")
                args.append(None if value is None else json.dumps(value))
            else:
                sets.append(f"{column} = %s")
                args.append(value)
        tail = f" RETURNING {_RETURNING}" if returning else ""
        return tx.defer(f"{prefix}UPDATE runs SET {', '.join(sets)} WHERE id = %s{tail}", *prefix_args, *args, run_id)

    def _settle(self, task_id: str, lease_token: str, status: RunStatus, *, error: str,
                retryable: bool = False) -> TaskState | None:
        """Bring the task in line with its run; None when the lease is gone (settled before)."""
        try:
            if status == RunStatus.SUCCEEDED:
                return TaskState.DONE if self.queue.complete(task_id, lease_token) else None
            return self.queue.fail(task_id, lease_token, error, retryable and status == RunStatus.QUEUED)
        except LeaseLost:
            return None

    def _follow_task(self, run_id: str, token_hash: str, state: TaskState, error: str | None) -> dict[str, Any]:
        status = {TaskState.CANCELLED: RunStatus.CANCELLED, TaskState.DONE: RunStatus.FAILED}.get(state, RunStatus.DEAD)
        with self.db.transaction() as tx:
            run = tx.fetch_one(f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.id = %s FOR UPDATE", run_id)
            assert run is not None
            if run["status"] != RunStatus.QUEUED or run["completion_lease"] != token_hash:
                return dict(run["completion"])
            answer = {**run["completion"], "status": status.value, "retry_scheduled": False}
            self._finish(tx, run, status, actor="system:queue", error=error,
                         extra={"completion": answer})
        return answer

    # -- data plane: checkpoints -------------------------------------------------------------------
    def _checkpoint_run(self, tx: Tx, principal: Principal, task_id: str, lease_token: str) -> Row:
        deployment_id, _ = self._dataplane(principal)
        run = tx.fetch_one("SELECT id, deployment_id, lease_hash, status FROM runs WHERE task_id = %s", task_id)
        if run is None or run["deployment_id"] != deployment_id:
            raise NotFound("task not found")
        if run["lease_hash"] != lease_hash(lease_token) or RunStatus(run["status"]).final:
            raise LeaseLost(f"task {task_id}: this lease no longer holds the run")
        return run

    def put_checkpoint(self, principal: Principal, task_id: str, lease_token: str, checkpoint_id: str,
                       body: CheckpointIn) -> None:
        """Store one LangGraph checkpoint of the task's run (idempotent per checkpoint id)."""
        with self.db.transaction() as tx:
            run = self._checkpoint_run(tx, principal, task_id, lease_token)
            tx.execute(
                "INSERT INTO run_checkpoints (run_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                "checkpoint_type, checkpoint, metadata_type, metadata, progress) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
                "ON CONFLICT (run_id, checkpoint_ns, checkpoint_id) DO UPDATE SET "
                "parent_checkpoint_id = EXCLUDED.parent_checkpoint_id, checkpoint_type = EXCLUDED.checkpoint_type, "
                "checkpoint = EXCLUDED.checkpoint, metadata_type = EXCLUDED.metadata_type, "
                "metadata = EXCLUDED.metadata, progress = EXCLUDED.progress",
                run["id"], body.checkpoint_ns, checkpoint_id, body.parent_checkpoint_id, body.checkpoint.type,
                _unb64(body.checkpoint.data, "checkpoint.data"), body.metadata.type,
                _unb64(body.metadata.data, "metadata.data"), json.dumps(body.progress))

    def put_writes(self, principal: Principal, task_id: str, lease_token: str, checkpoint_id: str,
                   body: CheckpointWritesIn) -> None:
        """Store a LangGraph task's pending writes against a checkpoint.

        As in LangGraph's own savers, a regular write (``idx >= 0``) is kept once; the special
        channels (errors, interrupts: negative ``idx``) are replaced.
        """
        with self.db.transaction() as tx:
            run = self._checkpoint_run(tx, principal, task_id, lease_token)
            for write in body.writes:
                conflict = ("DO UPDATE SET channel = EXCLUDED.channel, value_type = EXCLUDED.value_type, "
                            "value = EXCLUDED.value, task_path = EXCLUDED.task_path") if write.idx < 0 else "DO NOTHING"
                tx.execute("INSERT INTO run_checkpoint_writes (run_id, checkpoint_ns, checkpoint_id, task_id, idx, "
                           "task_path, channel, value_type, value) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                           f"ON CONFLICT (run_id, checkpoint_ns, checkpoint_id, task_id, idx) {conflict}",
                           run["id"], body.checkpoint_ns, checkpoint_id, body.task_id, write.idx, body.task_path,
                           write.channel, write.value.type, _unb64(write.value.data, "writes.value.data"))

    def list_checkpoints(self, principal: Principal, task_id: str, lease_token: str, *, checkpoint_ns: str,
                         checkpoint_id: str | None, before: str | None, limit: int) -> list[dict[str, Any]]:
        """The run's checkpoints in ``checkpoint_ns``, newest first, each with its pending writes."""
        with self.db.transaction() as tx:
            run = self._checkpoint_run(tx, principal, task_id, lease_token)
            clauses, args = ["run_id = %s", "checkpoint_ns = %s"], [run["id"], checkpoint_ns]
            if checkpoint_id is not None:
                clauses.append("checkpoint_id = %s")
                args.append(checkpoint_id)
            if before is not None:
                clauses.append("checkpoint_id < %s")
                args.append(before)
            rows = tx.fetch_all("SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type, "
                                "checkpoint, metadata_type, metadata, progress FROM run_checkpoints "
                                f"WHERE {' AND '.join(clauses)} ORDER BY checkpoint_id DESC LIMIT %s", *args, limit)
            ids = [r["checkpoint_id"] for r in rows]
            writes = tx.fetch_all("SELECT checkpoint_id, task_id, idx, task_path, channel, value_type, value "
                                  "FROM run_checkpoint_writes WHERE run_id = %s AND checkpoint_ns = %s "
                                  "AND checkpoint_id = ANY(%s::text[]) ORDER BY task_path, task_id, idx",
                                  run["id"], checkpoint_ns, ids) if ids else []
        by_checkpoint: dict[str, list[dict[str, Any]]] = {}
        for w in writes:
            by_checkpoint.setdefault(w["checkpoint_id"], []).append({
                "task_id": w["task_id"], "idx": w["idx"], "task_path": w["task_path"], "channel": w["channel"],
                "value": {"type": w["value_type"], "data": _b64(w["value"])}})
        return [{"checkpoint_ns": r["checkpoint_ns"], "checkpoint_id": r["checkpoint_id"],
                 "parent_checkpoint_id": r["parent_checkpoint_id"],
                 "checkpoint": {"type": r["checkpoint_type"], "data": _b64(r["checkpoint"])},
                 "metadata": {"type": r["metadata_type"], "data": _b64(r["metadata"])},
                 "progress": r["progress"], "writes": by_checkpoint.get(r["checkpoint_id"], [])} for r in rows]

    # -- maintenance -------------------------------------------------------------------------------
    def reconcile(self, *, idle_for: timedelta = timedelta(seconds=30), limit: int = 200) -> list[str]:
        """Close unfinished runs that nobody will finish; returns the runs closed.

        * A run whose task ended without it: a lease expired on the task's last attempt (the
          worker died and the queue gave up), or the control plane stopped between recording a
          retry and settling its task. The run follows its task (``dead``, ``cancelled``).
        * A run of an uninstalled deployment: its data-plane key is revoked, so no worker can take
          or report it any more. It is cancelled, with its task.
        """
        closed = self._close_orphans(limit)
        with self.db.read() as tx:
            candidates = tx.fetch_all("SELECT id, task_id FROM runs WHERE status IN ('queued', 'running') "
                                      "AND task_id IS NOT NULL AND updated_at < %s ORDER BY updated_at LIMIT %s",
                                      datetime.now(UTC) - idle_for, limit)
        for candidate in candidates:
            info = self.queue.get(candidate["task_id"])
            if info is None or not info.state.final:
                continue
            status = {TaskState.CANCELLED: RunStatus.CANCELLED, TaskState.DEAD: RunStatus.DEAD}.get(
                info.state, RunStatus.FAILED)
            error = info.last_error or f"its task ended ({info.state.value}) without a recorded completion"
            if status == RunStatus.DEAD:
                error = f"gave up after {info.attempt} attempts: {error}"
            if self._close(candidate["id"], status, error):
                closed.append(candidate["id"])
        if closed:
            _log.info("reconciled %d unfinished runs", len(closed), extra={"fields": {"runs": closed}})
        return closed

    def _close_orphans(self, limit: int) -> list[str]:
        with self.db.read() as tx:
            orphans = tx.fetch_all("SELECT r.id, r.task_id FROM runs r JOIN deployments d ON d.id = r.deployment_id "
                                   "WHERE r.status IN ('queued', 'running') AND d.status = 'uninstalled' LIMIT %s",
                                   limit)
        closed = []
        for orphan in orphans:
            if orphan["task_id"] is not None:
                self.queue.request_cancel(orphan["task_id"])
            if self._close(orphan["id"], RunStatus.CANCELLED, "the deployment was uninstalled"):
                closed.append(orphan["id"])
        return closed

    def _close(self, run_id: str, status: RunStatus, error: str) -> bool:
        with self.db.transaction() as tx:
            run = tx.fetch_one(f"SELECT {_RUN_COLUMNS} FROM runs r WHERE r.id = %s FOR UPDATE", run_id)
            if run is None or RunStatus(run["status"]) in FINAL_STATUSES:
                return False
            self._finish(tx, run, status, actor="system:reconcile", error=error)
        return True

def _unb64(data: str, path: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise Unprocessable("not valid base64", details=[{"path": path, "message": str(exc)}]) from exc


def _b64(data: bytes | memoryview) -> str:
    return base64.b64encode(bytes(data)).decode()

