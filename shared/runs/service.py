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
from typing import Any, Literal, Protocol

import jsonschema

from shared.audit import AuditLog
from shared.billing import BillingService, Outcome, UsageReportIn, UsageReportOut
from shared.catalog import AgentManifest, CatalogService, PackageOut, code_digest
from shared.deployments import DeploymentService
from shared.identity import ANY_MEMBER, RUNNERS, Need, OrgService, Principal, Role, decide
from shared.kernel.db.database import ASYNC_COMMIT, Database, Deferred, Row, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.pagination import Keyset, Page, cut_page, next_page
from shared.kernel.redaction import redact, redact_text
from shared.runs.models import (
    CheckpointIn,
    CheckpointList,
    CheckpointWritesIn,
    CompleteIn,
    CompletionOut,
    HeartbeatOut,
    LogBatchOut,
    LogLineIn,
    LogLineOut,
    LogPage,
    RemediationEntry,
    RunCreated,
    RunEvent,
    RunEventType,
    RunListQuery,
    RunMemoryScope,  # for memory
    RunOut,
    RunStatus,
    RunSummary,
    TaskOut,
)
from shared.runs.task_queue import ClaimedTask, LeaseLost, TaskQueue, TaskState

_log = logging.getLogger(__name__)
_Q = Queries("shared.runs")

TASK_KIND = "agent_run"
DEFAULT_MAX_ATTEMPTS = 3

RunAction = Literal["read", "start", "cancel"]


def authorize(principal: Principal, role: Role | None, action: RunAction, *, unseen: str) -> None:
    """The run service's access decision, given the caller's role in the run's org, made by
    identity's one decision point (``decide``): a non-member learns nothing, not even that the
    thing exists (404 with ``unseen``); any member reads; starting and cancelling need
    ``operator`` or ``admin`` (403)."""
    need = Need(roles=ANY_MEMBER if action == "read" else RUNNERS,
                doing=f"{action} runs (operator or admin required)", unknown=unseen)
    denied = decide(principal, need, role)
    if denied is not None:
        raise denied


class RunEvents(Protocol):
    """Where run outcomes are announced (webhooks, approvals, notifications), inside the
    transaction that records them."""

    def __call__(self, tx: Tx, event: RunEvent) -> object:
        """Record ``event``; it commits or rolls back with the run's change."""
        ...


@dataclass(frozen=True, slots=True)
class RunState:
    """What the control plane's decisions need of a run (the ``run_state*`` queries' columns)."""

    id: str
    org_id: str
    agent_id: str
    deployment_id: str
    version: str
    status: RunStatus
    task_id: str | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    lease_hash: str | None
    completion_lease: str | None
    completion: dict[str, Any] | None
    remediated: bool = False  # an approved action of it executed (read with the lock only)
    remediation_saving_micros: int = 0  # what its executed actions save a month (read with the lock only)

    @classmethod
    def of(cls, row: Row) -> RunState:
        """From a row holding (at least) these columns."""
        return cls(id=row["id"], org_id=row["org_id"], agent_id=row["agent_id"], deployment_id=row["deployment_id"],
                   version=row["version"], status=RunStatus(row["status"]), task_id=row["task_id"],
                   attempt=row["attempt"], max_attempts=row["max_attempts"], cancel_requested=row["cancel_requested"],
                   lease_hash=row["lease_hash"], completion_lease=row["completion_lease"],
                   completion=row["completion"], remediated=bool(row.get("remediated")),
                   remediation_saving_micros=int(row.get("remediation_saving_micros") or 0))


@dataclass(frozen=True)
class _Version:
    manifest: AgentManifest
    manifest_json: dict[str, Any]
    inputs_validator: jsonschema.protocols.Validator
    package: PackageOut | None = None  # fixed once the version is approved, as a run's version is
    code_digest: str = ""  # what a gated action names as the code it runs (shared/catalog/code_identity.py)


_VERSION_CACHE_SIZE = 512
_AGENT_NAMES_CACHE_SIZE = 4096


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


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


# billing (issue 16): how each final outcome a data plane reports is billed (docs/BILLING.md).
_BILLED_AS = {RunStatus.SUCCEEDED: Outcome.SUCCEEDED, RunStatus.FAILED: Outcome.FAILED,
              RunStatus.CANCELLED: Outcome.CANCELLED, RunStatus.DEAD: Outcome.PLATFORM_FAILURE,
              RunStatus.REMEDIATED: Outcome.SUCCEEDED}


class RunService:
    """Runs for users (create, read, list, cancel, logs) and for data planes (claim, heartbeat, logs,
    checkpoints, complete). Every change to a run is audited in the transaction that makes it."""

    def __init__(self, db: Database, audit: AuditLog, orgs: OrgService, queue: TaskQueue, *,
                 catalog: CatalogService, deployments: DeploymentService, events: RunEvents | None = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, billing: BillingService | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.db = db
        self.audit = audit
        self.orgs = orgs
        self.catalog = catalog
        self.deployments = deployments
        self.queue = queue
        self.events = events
        self.max_attempts = max_attempts
        self.billing = billing  # billing (issue 16): meters and charges each final outcome
        self._start_run = _Q.start_run.format(async_commit=ASYNC_COMMIT)
        self._versions: collections.OrderedDict[tuple[str, str], _Version] = collections.OrderedDict()
        self._versions_lock = threading.Lock()
        self._agent_names: dict[str, str] = {}

    # -- lookups ---------------------------------------------------------------------------------
    def _agent_id(self, tx: Tx, agent_ref: str) -> str | None:
        """The listing id an agent reference names: listings are addressed by id ("agt_...") or by
        name (a slug), as in the catalog. None for a name no listing has.

        A name never changes and a listing is never deleted, so a name found is kept.
        """
        if agent_ref.startswith("agt_"):
            return agent_ref
        found = self._agent_names.get(agent_ref)
        if found is None:
            found = self.catalog.agent_id_of(tx, agent_ref)
            if found is not None:
                if len(self._agent_names) >= _AGENT_NAMES_CACHE_SIZE:
                    self._agent_names.clear()
                self._agent_names[agent_ref] = found
        return found

    def _readable(self, principal: Principal, agent_ref: str, run_id: str, action: RunAction) -> Row:
        """A run of the agent, every column, if the caller may do ``action`` with it."""
        with self.db.read() as tx:
            agent_id = self._agent_id(tx, agent_ref)
            row = tx.fetch_one(_Q.run, run_id, agent_id) if agent_id is not None else None
        if row is None:
            raise NotFound("run not found")
        authorize(principal, self.orgs.role_of(principal, row["org_id"]), action, unseen="run not found")
        return row

    def _version(self, agent_id: str, version: str, tx: Tx | None = None) -> _Version:
        """A published version's manifest, its JSON and its inputs validator.

        Versions are immutable, so they are cached: parsing a manifest and compiling its schemas
        costs more than everything else a run's creation or claim does. Without ``tx`` a miss is
        read on a connection of its own.
        """
        key = (agent_id, version)
        with self._versions_lock:
            cached = self._versions.get(key)
            if cached is not None:
                self._versions.move_to_end(key)
                return cached
        if tx is None:
            with self.db.read() as own:
                manifest = self.catalog.version_manifest(own, agent_id, version)
                package = self.catalog.version_package(own, agent_id, version)
        else:
            manifest = self.catalog.version_manifest(tx, agent_id, version)
            package = self.catalog.version_package(tx, agent_id, version)
        if manifest is None:
            raise NotFound(f"version {version} of the agent is gone")
        manifest_json = manifest.model_dump(mode="json")
        loaded = _Version(manifest, manifest_json, jsonschema.Draft202012Validator(manifest.inputs), package,
                          code_digest(manifest_json, package))
        with self._versions_lock:
            self._versions[key] = loaded
            while len(self._versions) > _VERSION_CACHE_SIZE:
                self._versions.popitem(last=False)
        return loaded

    def code_digest_of(self, agent_id: str, version: str, tx: Tx | None = None) -> str:
        """What identifies the code a run of this version executes (``sha256:...``): its package's
        digest, or its canonical manifest's without one. Approvals hold gated actions to it."""
        return self._version(agent_id, version, tx).code_digest

    @staticmethod
    def _dataplane(principal: Principal) -> tuple[str, str]:
        if not principal.deployment_id or not principal.key_org_id:
            raise NotFound("this credential belongs to no deployment")
        return principal.deployment_id, principal.key_org_id

    def _dataplane_run(self, tx: Tx, principal: Principal, agent_ref: str, run_id: str, *,
                       lock: bool = False) -> RunState:
        deployment_id, _ = self._dataplane(principal)
        agent_id = self._agent_id(tx, agent_ref)
        row = (tx.fetch_one(_Q.run_state_for_update if lock else _Q.run_state, run_id, agent_id)
               if agent_id is not None else None)
        if row is None or row["deployment_id"] != deployment_id:
            raise NotFound("run not found")  # a data plane sees its own deployment's runs only
        return RunState.of(row)

    # -- users -------------------------------------------------------------------------------------
    def create(self, principal: Principal, agent_ref: str, deployment_id: str, inputs: dict[str, Any], *,
               max_charge_micros: int | None = None) -> RunCreated:
        """Create a queued run of a deployment and enqueue its task, in one transaction (a batch:
        no BEGIN or COMMIT, ``Database.batch``).

        The caller's roles and the deployment are read together (the first statements of the
        batch), then the task, the run and the audit entry go out with its end.
        """
        with self.db.batch() as tx:
            # The deployment is looked up across orgs only to learn its org; the caller's role in
            # that org decides the rest. The roles travel with the deployment's read.
            roles = self.orgs.member_roles(tx, principal)
            deployment = self.deployments.runnable(tx, deployment_id)
            authorize(principal, roles.role_in(deployment.org_id) if deployment is not None else None, "start",
                      unseen="deployment not found")
            assert deployment is not None
            if self._agent_id(tx, agent_ref) != deployment.agent_id:
                raise NotFound("this deployment does not run that agent")
            if not deployment.accepts_runs:
                raise Conflict(f"the deployment is {deployment.status}; runs need a ready deployment",
                               code=ErrorCode.DEPLOYMENT_NOT_READY)
            version = self._version(deployment.agent_id, deployment.version, tx)
            problems = input_problems(version.manifest, inputs, validator=version.inputs_validator)
            if problems:
                raise Unprocessable("the inputs do not match the agent's input schema", details=problems)
            run_id = new_id("run")
            if self.billing is not None:  # billing (issue 16): frozen orgs and budgets refuse; caps are held
                self.billing.reserve(tx, org_id=deployment.org_id, run_id=run_id, max_charge_micros=max_charge_micros)
            # The task first (its table has no foreign key to runs): the run then records its id.
            task_id = self.queue.enqueue(tx, kind=TASK_KIND, payload={"run_id": run_id}, run_id=run_id,
                                         org_id=deployment.org_id, deployment_id=deployment_id,
                                         max_attempts=self.max_attempts)
            # Held back with the task and the audit entry: they go out with the COMMIT.
            created = tx.defer(_Q.insert_run, run_id, deployment.org_id, deployment.agent_id, deployment_id,
                               deployment.version, json.dumps(inputs), self.max_attempts, principal.actor, task_id)
            self.audit.append(tx, org_id=deployment.org_id, actor=principal.actor, action="run.created",
                              target=run_id, details={"agent_id": deployment.agent_id,
                                                      "deployment_id": deployment_id,
                                                      "version": deployment.version, "task_id": task_id})
        row = _row(created)
        return RunCreated(**row, run_id=row["id"])

    def get(self, principal: Principal, agent_ref: str, run_id: str) -> RunOut:
        """A run, for any member of its org."""
        return RunOut(**self._readable(principal, agent_ref, run_id, "read"))

    def page(self, org_id: str, query: RunListQuery) -> Page[RunSummary]:
        """The org's runs, newest first, keyset-paginated (no access check: the operation's)."""
        after = Keyset.after(query.cursor)
        with self.db.read() as tx:
            agent_id = self._agent_id(tx, query.agent_id) if query.agent_id else None
            if query.agent_id and agent_id is None:
                return Page[RunSummary](items=[], next_cursor=None)  # no such agent: no runs
            status = query.status.value if query.status else None
            rows = tx.fetch_all(_Q.runs_page, org_id, status, status, agent_id, agent_id,
                                query.deployment_id, query.deployment_id, *after.params, query.limit + 1)
        items, cursor = next_page(rows, query.limit, lambda r: Keyset.of(r["created_at"], r["id"]))
        return Page[RunSummary](items=[RunSummary(**r) for r in items], next_cursor=cursor)

    def cancel(self, principal: Principal, agent_ref: str, run_id: str) -> RunOut:
        """Cancel a run, whatever its state (idempotent).

        Queued: cancelled at once, with its task. Running: flagged; the worker sees the flag at its
        next heartbeat, stops between steps and reports ``cancelled`` (a worker that is gone has no
        live lease, and then the run is cancelled at once). Finished: nothing changes.
        """
        return self._cancel(self._readable(principal, agent_ref, run_id, "cancel"), actor=principal.actor)

    def _cancel(self, row: Row, *, actor: str) -> RunOut:
        """Cancel the run ``row`` (every column, the caller's access checked) on behalf of ``actor``."""
        run_id = row["id"]
        if RunStatus(row["status"]).final:
            return RunOut(**row)
        agent_id = row["agent_id"]
        changed: Deferred | None = None
        with self.db.transaction() as tx:
            row = self._locked(tx, run_id, agent_id)
            run = RunState.of(row)
            if run.status in (RunStatus.QUEUED, RunStatus.AWAITING_APPROVAL):  # neither holds a lease
                changed = self._finish(tx, run, RunStatus.CANCELLED, actor=actor,
                                       error=f"cancelled by {actor} before it started",
                                       cancel_requested=True, returning=True)
            elif run.status == RunStatus.RUNNING and not run.cancel_requested:
                changed = tx.defer(_Q.request_cancel, run_id)
                self.audit.append(tx, org_id=run.org_id, actor=actor, action="run.cancel_requested",
                                  target=run_id, details={"attempt": run.attempt})
        if changed is not None:
            row = _row(changed)
        if row["task_id"] is None:
            return RunOut(**row)
        task_state = self.queue.request_cancel(row["task_id"])
        if row["status"] == RunStatus.RUNNING and task_state == TaskState.CANCELLED:
            # No live lease: nobody is working on the run, so nobody would report the cancel.
            changed = None
            with self.db.transaction() as tx:
                row = self._locked(tx, run_id, agent_id)
                if row["status"] == RunStatus.RUNNING:
                    changed = self._finish(tx, RunState.of(row), RunStatus.CANCELLED, actor=actor,
                                           error=f"cancelled by {actor}; its worker had stopped",
                                           returning=True)
            if changed is not None:
                row = _row(changed)
        return RunOut(**row)

    @staticmethod
    def _locked(tx: Tx, run_id: str, agent_id: str) -> Row:
        row = tx.fetch_one(_Q.run_for_update, run_id, agent_id)
        if row is None:
            raise NotFound("run not found")
        return row

    def log_page(self, principal: Principal, agent_ref: str, run_id: str, *, after_seq: int, limit: int
                 ) -> LogPage:
        """Log lines of a run after ``after_seq`` (members of the run's org). The cursor stays the
        sequence number clients follow by (``after_seq``); one line more than ``limit`` is read to
        know whether another page follows, so a full last page announces none."""
        self._readable(principal, agent_ref, run_id, "read")
        lines, last = cut_page(self.read_logs(run_id, after_seq=after_seq, limit=limit + 1), limit)
        return LogPage(items=lines, next_after_seq=None if last is None else last.seq)

    def read_logs(self, run_id: str, *, after_seq: int, limit: int) -> list[LogLineOut]:
        """Log lines after ``after_seq``, in order (no access check: callers checked already)."""
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.log_lines, run_id, after_seq, limit)
        return [LogLineOut(**r) for r in rows]

    def status_of(self, run_id: str) -> RunStatus:
        """A run's current status (no access check)."""
        with self.db.read() as tx:
            status = tx.fetch_val(_Q.run_status, run_id)
        if status is None:
            raise NotFound("run not found")
        return RunStatus(status)

    # -- data plane: delivery --------------------------------------------------------------------
    def claim(self, principal: Principal, *, worker: str, wait_seconds: float, lease_seconds: int
              ) -> TaskOut | None:
        """Lease the deployment's next run, waiting up to ``wait_seconds``; the run becomes ``running``."""
        deployment_id, _ = self._dataplane(principal)
        deadline = time.monotonic() + wait_seconds
        while True:
            task = self.queue.claim_next(deployment_id=deployment_id, worker_id=worker, lease_seconds=lease_seconds,
                                         wait_seconds=max(0.0, deadline - time.monotonic()))
            if task is None:
                return None
            leased = self._start(task, deployment_id, worker, lease_seconds)
            if leased is not None:
                return leased

    def _start(self, task: ClaimedTask, deployment_id: str, worker: str, lease_seconds: int) -> TaskOut | None:
        # The run's UPDATE locks the run and re-checks its status, so a cancel or a completion
        # that committed first wins and the run is not started again. It and the read of the
        # deployment's config and grants (as they are now: a revoked grant applies at once) are
        # held back and go out with the batch's end: one round trip, one implicit transaction.
        with self.db.batch() as tx:
            started = tx.defer(self._start_run, task.attempt, lease_hash(task.lease_token), worker[:200], task.id,
                               task.run_id, task.deployment_id)
            grants = self.deployments.defer_runnable(tx, deployment_id)
        run = started.one()
        if run is not None:
            settings = grants.get()
            assert settings is not None, "a run's deployment is never deleted"
            version = self._version(run["agent_id"], run["version"])
            return TaskOut(task_id=task.id, lease_token=task.lease_token, lease_expires_at=task.lease_expires_at,
                           lease_seconds=lease_seconds, run_id=run["id"], agent_id=run["agent_id"],
                           version=run["version"], inputs=run["inputs"], config=settings.config,
                           granted_permissions=settings.granted_permissions,
                           manifest=version.manifest_json, package=version.package,
                           attempt=task.attempt, max_attempts=run["max_attempts"],
                           cancel_requested=run["cancel_requested"], next_log_seq=int(run["next_log_seq"]))
        with self.db.read() as tx:
            found = tx.fetch_one(_Q.run_status_and_deployment, task.run_id)
        stale = RunStatus.FAILED
        if found is not None and found["deployment_id"] == task.deployment_id and RunStatus(found["status"]).final:
            stale = RunStatus(found["status"])
        # Finished before this delivery (a completion recorded just before a crash, or a cancel
        # racing the claim), or gone: close the task so that it is not delivered again.
        self._settle(task.id, task.lease_token, stale, error=f"the run is already {stale.value}")
        return None

    def heartbeat(self, principal: Principal, task_id: str, lease_token: str, lease_seconds: int) -> HeartbeatOut:
        """Extend a lease; ``LeaseLost`` (409) when it is no longer the caller's."""
        deployment_id, _ = self._dataplane(principal)
        info = self.queue.get(task_id)
        if info is None or info.deployment_id != deployment_id:
            raise NotFound("task not found")
        result = self.queue.heartbeat(task_id, lease_token, lease_seconds)
        if not result.ok:
            raise LeaseLost(f"task {task_id}: the lease was lost (expired and delivered again, or finished)")
        return HeartbeatOut(cancel_requested=result.cancel_requested, lease_expires_at=result.lease_expires_at)

    def _holder(self, tx: Tx, principal: Principal, agent_ref: str, run_id: str, lease_token: str) -> RunState:
        run = self._dataplane_run(tx, principal, agent_ref, run_id)
        if run.lease_hash != lease_hash(lease_token):
            raise LeaseLost(f"run {run_id}: this lease no longer holds the run")
        return run

    # -- data plane: logs ------------------------------------------------------------------------
    def append_logs(self, principal: Principal, agent_ref: str, run_id: str, lease_token: str,
                    lines: Sequence[LogLineIn]) -> LogBatchOut:
        """Store a batch of log lines (redacted); says how many were new and how many stored before."""
        with self.db.transaction() as tx:
            run = self._holder(tx, principal, agent_ref, run_id, lease_token)
            count = tx.execute(_Q.insert_logs, run_id, run.attempt or 1,
                               [line.seq for line in lines], [line.ts for line in lines],
                               [line.level for line in lines], [line.step for line in lines],
                               [redact_text(line.message) for line in lines],
                               [json.dumps(redact(line.fields), default=str) for line in lines])
        return LogBatchOut(accepted=count, duplicates=len(lines) - count)

    # -- data plane: completion --------------------------------------------------------------------
    def complete(self, principal: Principal, agent_ref: str, run_id: str, report: CompleteIn
                 ) -> tuple[CompletionOut, bool]:
        """Record a run's outcome once per lease; returns (the answer, whether it is a replay).

        ``failed`` with ``retryable`` goes back to the queue while attempts remain (the run is
        ``queued`` again), then the run is ``dead``. A cancel request turns a failure into
        ``cancelled``.
        """
        if report.error:
            # Whatever the agent's error quotes (a signed URL, a key) goes no further: the run, its
            # task, the audit entry and the webhook payload all take it from here.
            report = report.model_copy(update={"error": redact_text(report.error)})
        token_hash = lease_hash(report.lease_token)
        with self.db.batch() as tx:
            run = self._dataplane_run(tx, principal, agent_ref, run_id, lock=True)
            if run.completion_lease == token_hash:
                assert run.completion is not None, "a recorded completion has its answer"
                answer, replay = run.completion, True
            else:
                if run.lease_hash != token_hash or run.task_id != report.task_id:
                    raise LeaseLost(f"run {run_id}: this lease no longer holds the run")
                if run.status.final:
                    raise Conflict(f"run {run_id} is already {run.status.value}", code=ErrorCode.RUN_FINISHED)
                answer, replay = self._record(tx, principal, run, report, token_hash), False
                if answer["status"] in (RunStatus.SUCCEEDED, RunStatus.REMEDIATED):
                    # A success settles its task in the same transaction: the run's writes and the
                    # task's go out with the commit, in one packet.
                    self.queue.complete_in(tx, report.task_id, report.lease_token)
        target = RunStatus(answer["status"])
        if target in (RunStatus.SUCCEEDED, RunStatus.REMEDIATED) and not replay:
            return CompletionOut(**answer), replay
        # Otherwise the queue decides (backoff, attempts left, a cancel); a replay settles again,
        # which heals a completion recorded before a crash that left its task leased.
        settled = self._settle(report.task_id, report.lease_token, target,
                               error=report.error or f"reported {report.status}", retryable=report.retryable)
        if target == RunStatus.QUEUED and settled not in (None, TaskState.QUEUED):
            # The queue decided otherwise (a cancel raced the failure): the run follows its task.
            answer = self._follow_task(run_id, token_hash, settled, report.error)
        return CompletionOut(**answer), replay

    def _record(self, tx: Tx, principal: Principal, run: RunState, report: CompleteIn, token_hash: str
                ) -> dict[str, Any]:
        status = RunStatus(report.status)
        if status == RunStatus.FAILED:
            if run.cancel_requested:
                status = RunStatus.CANCELLED
            elif report.retryable:
                status = RunStatus.QUEUED if run.attempt < run.max_attempts else RunStatus.DEAD
        answer = {"run_id": run.id, "status": status.value, "attempt": run.attempt,
                  "retry_scheduled": status == RunStatus.QUEUED}
        error = report.error
        if status == RunStatus.QUEUED:
            tx.defer(_Q.schedule_retry, error, token_hash, json.dumps(answer), run.id)
            self.audit.append(tx, org_id=run.org_id, actor=principal.actor, action="run.retry_scheduled",
                              target=run.id, details={"attempt": run.attempt, "error": error})
            return answer
        if status == RunStatus.DEAD:
            error = f"gave up after {run.attempt} attempts: {error}"
        if status == RunStatus.SUCCEEDED and run.remediated:  # approvals: an action ran (read with the lock)
            status = RunStatus.REMEDIATED
            answer["status"] = status.value
        metrics = {**report.metrics.model_dump(exclude_none=True), "attempts": run.attempt}
        if self.billing is not None:  # billing (issue 16): charged once, with the outcome's commit
            self.billing.charge_run(tx, run_id=run.id, org_id=run.org_id, agent_id=run.agent_id, version=run.version,
                                    pricing=self._version(run.agent_id, run.version, tx).manifest.pricing,
                                    outcome=_BILLED_AS[status], records=report.metrics.records_processed,
                                    cpu_seconds=report.metrics.cpu_seconds, actor=principal.actor)
        self._finish(tx, run, status, actor=principal.actor, error=error, outputs=report.outputs,
                     metrics=metrics, completion_lease=token_hash, completion=answer,
                     released=self.billing is not None)  # the charge ended the reservation
        return answer

    def _finish(self, tx: Tx, run: RunState, status: RunStatus, *, actor: str, error: str | None = None,
                outputs: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                completion_lease: str | None = None, completion: dict[str, Any] | None = None,
                cancel_requested: bool = False, returning: bool = False, released: bool = False) -> Deferred:
        """Move a run to a final status: audited, announced, its checkpoints dropped. The writes
        are held back (``Tx.defer``); with ``returning`` the Deferred gives the run's row.
        ``completion_lease`` and ``completion`` are left as they are when None."""
        finished_at = datetime.now(UTC)
        row = tx.defer(_Q.finish_run_returning if returning else _Q.finish_run, run.id, run.id, status.value, error,
                       _json(outputs), _json(metrics), finished_at, completion_lease, _json(completion),
                       cancel_requested, run.id)
        if self.billing is not None and not released:  # billing (issue 16): the reservation ends with the run
            self.billing.release(tx, run.id)
        details: dict[str, Any] = {"attempt": run.attempt, "error": error}
        if metrics is not None:
            details["metrics"] = metrics
        self.audit.append(tx, org_id=run.org_id, actor=actor, action=f"run.{status.value}", target=run.id,
                          details=details)
        if self.events is not None:
            self.events(tx, RunEvent(type=RunEventType.of(status), org_id=run.org_id, run_id=run.id,
                                     agent_id=run.agent_id, deployment_id=run.deployment_id, version=run.version,
                                     status=status, error=error, metrics=metrics, finished_at=finished_at,
                                     monthly_saving_micros=run.remediation_saving_micros))
        return row

    def _settle(self, task_id: str, lease_token: str, status: RunStatus, *, error: str,
                retryable: bool = False) -> TaskState | None:
        """Bring the task in line with its run; None when the lease is gone (settled before)."""
        try:
            if status in (RunStatus.SUCCEEDED, RunStatus.REMEDIATED):
                return TaskState.DONE if self.queue.complete(task_id, lease_token) else None
            return self.queue.fail(task_id, lease_token, error, retryable and status == RunStatus.QUEUED)
        except LeaseLost:
            return None

    def _follow_task(self, run_id: str, token_hash: str, state: TaskState, error: str | None) -> dict[str, Any]:
        status = {TaskState.CANCELLED: RunStatus.CANCELLED, TaskState.DONE: RunStatus.FAILED}.get(state, RunStatus.DEAD)
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.run_state_by_id_for_update, run_id)
            assert row is not None
            run = RunState.of(row)
            assert run.completion is not None, "a recorded retry has its answer"
            if run.status != RunStatus.QUEUED or run.completion_lease != token_hash:
                return dict(run.completion)
            answer = {**run.completion, "status": status.value, "retry_scheduled": False}
            self._finish(tx, run, status, actor="system:queue", error=error, completion=answer)
        return answer

    # -- data plane: checkpoints -------------------------------------------------------------------
    def _checkpoint_run(self, tx: Tx, principal: Principal, task_id: str, lease_token: str) -> str:
        """The id of the run the task serves, if this lease holds it."""
        deployment_id, _ = self._dataplane(principal)
        run = tx.fetch_one(_Q.checkpoint_run, task_id)
        if run is None or run["deployment_id"] != deployment_id:
            raise NotFound("task not found")
        if run["lease_hash"] != lease_hash(lease_token) or RunStatus(run["status"]).final:
            raise LeaseLost(f"task {task_id}: this lease no longer holds the run")
        return str(run["id"])

    def put_checkpoint(self, principal: Principal, task_id: str, lease_token: str, checkpoint_id: str,
                       body: CheckpointIn) -> None:
        """Store one LangGraph checkpoint of the task's run (idempotent per checkpoint id)."""
        with self.db.transaction() as tx:
            run_id = self._checkpoint_run(tx, principal, task_id, lease_token)
            tx.execute(_Q.put_checkpoint, run_id, body.checkpoint_ns, checkpoint_id, body.parent_checkpoint_id,
                       body.checkpoint.type, _unb64(body.checkpoint.data, "checkpoint.data"), body.metadata.type,
                       _unb64(body.metadata.data, "metadata.data"), json.dumps(body.progress))

    def put_writes(self, principal: Principal, task_id: str, lease_token: str, checkpoint_id: str,
                   body: CheckpointWritesIn) -> None:
        """Store a LangGraph task's pending writes against a checkpoint.

        As in LangGraph's own savers, a regular write (``idx >= 0``) is kept once; the special
        channels (errors, interrupts: negative ``idx``) are replaced.
        """
        with self.db.transaction() as tx:
            run_id = self._checkpoint_run(tx, principal, task_id, lease_token)
            for write in body.writes:
                tx.execute(_Q.put_special_write if write.idx < 0 else _Q.put_regular_write,
                           run_id, body.checkpoint_ns, checkpoint_id, body.task_id, write.idx, body.task_path,
                           write.channel, write.value.type, _unb64(write.value.data, "writes.value.data"))

    def list_checkpoints(self, principal: Principal, task_id: str, lease_token: str, *, checkpoint_ns: str,
                         checkpoint_id: str | None, before: str | None, limit: int) -> CheckpointList:
        """The run's checkpoints in ``checkpoint_ns``, newest first, each with its pending writes."""
        with self.db.transaction() as tx:
            run_id = self._checkpoint_run(tx, principal, task_id, lease_token)
            rows = tx.fetch_all(_Q.checkpoints, run_id, checkpoint_ns, checkpoint_id, checkpoint_id, before, before,
                                limit)
            ids = [r["checkpoint_id"] for r in rows]
            writes = tx.fetch_all(_Q.checkpoint_writes, run_id, checkpoint_ns, ids) if ids else []
        by_checkpoint: dict[str, list[dict[str, Any]]] = {}
        for w in writes:
            by_checkpoint.setdefault(w["checkpoint_id"], []).append({
                "task_id": w["task_id"], "idx": w["idx"], "task_path": w["task_path"], "channel": w["channel"],
                "value": {"type": w["value_type"], "data": _b64(w["value"])}})
        return CheckpointList.model_validate({"items": [
            {"checkpoint_ns": r["checkpoint_ns"], "checkpoint_id": r["checkpoint_id"],
             "parent_checkpoint_id": r["parent_checkpoint_id"],
             "checkpoint": {"type": r["checkpoint_type"], "data": _b64(r["checkpoint"])},
             "metadata": {"type": r["metadata_type"], "data": _b64(r["metadata"])},
             "progress": r["progress"], "writes": by_checkpoint.get(r["checkpoint_id"], [])} for r in rows]})

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
            candidates = tx.fetch_all(_Q.idle_unfinished_runs, datetime.now(UTC) - idle_for, limit)
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
            active = [row["deployment_id"] for row in tx.fetch_all(_Q.unfinished_deployments)]
            gone = self.deployments.uninstalled_among(tx, active) if active else set()
            orphans = tx.fetch_all(_Q.unfinished_runs_of, sorted(gone), limit) if gone else []
        closed = []
        for orphan in orphans:
            if orphan["task_id"] is not None:
                self.queue.request_cancel(orphan["task_id"])
            if self._close(orphan["id"], RunStatus.CANCELLED, "the deployment was uninstalled"):
                closed.append(orphan["id"])
        return closed

    def _close(self, run_id: str, status: RunStatus, error: str) -> bool:
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.run_state_by_id_for_update, run_id)
            if row is None or RunStatus(row["status"]).final:
                return False
            self._finish(tx, RunState.of(row), status, actor="system:reconcile", error=error)
        return True

    # -- for memory --
    def memory_scope(self, principal: Principal, task_id: str, lease_token: str) -> RunMemoryScope:
        """Whose memory a data plane's leased task may use: the run's org, its agent's name and
        the memory levels and namespaces its manifest declares (404/409 as for checkpoints)."""
        deployment_id, _ = self._dataplane(principal)
        with self.db.read() as tx:
            run = tx.fetch_one(_Q.memory_run, task_id)
        if run is None or run["deployment_id"] != deployment_id:
            raise NotFound("task not found")
        if run["lease_hash"] != lease_hash(lease_token) or RunStatus(run["status"]).final:
            raise LeaseLost(f"task {task_id}: this lease no longer holds the run")
        manifest = self._version(run["agent_id"], run["version"]).manifest
        return RunMemoryScope(org_id=str(run["org_id"]), run_id=str(run["id"]), agent=manifest.name,
                              levels=list(manifest.memory.levels),
                              namespaces=[str(n) for n in manifest.memory.namespaces])


    # -- for billing --
    def report_usage(self, principal: Principal, agent_ref: str, run_id: str, report: UsageReportIn
                     ) -> UsageReportOut:
        """A runner's usage heartbeat for a run it holds: billing says whether the run reached its
        maximum charge; if so the run's cancel is requested too (the runner stops it at once)."""
        if self.billing is None:
            raise NotFound("billing is not enabled")
        with self.db.transaction() as tx:
            run = self._holder(tx, principal, agent_ref, run_id, report.lease_token)
            if run.status != RunStatus.RUNNING:
                raise Conflict(f"run {run_id} is {run.status.value}", code=ErrorCode.RUN_FINISHED)
            answer = self.billing.report_usage(
                tx, run_id=run.id, pricing=self._version(run.agent_id, run.version, tx).manifest.pricing,
                records=report.records_processed, cpu_seconds=report.cpu_seconds)
            if answer.stop and not run.cancel_requested:
                tx.defer(_Q.request_cancel, run.id)
                self.audit.append(tx, org_id=run.org_id, actor="billing", action="run.cancel_requested",
                                  target=run.id, details={"reason": "the run reached its maximum charge",
                                                          "cap_usd": answer.cap_usd})
        if answer.stop and run.task_id is not None:
            self.queue.request_cancel(run.task_id)
        return answer

    def cancel_all(self, org_id: str, *, actor: str) -> list[str]:
        """Cancel every queued, running or waiting run of ``org_id`` on the platform's behalf
        (``actor``: billing freezing an org whose invoice is unpaid); their ids. As ``cancel``:
        queued and waiting runs end at once, running ones are told to stop."""
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.active_runs_of_org, org_id)
        for found in rows:
            with self.db.read() as tx:
                row = tx.fetch_one(_Q.run, found["id"], found["agent_id"])
            if row is not None:
                self._cancel(row, actor=actor)
        return [row["id"] for row in rows]

    # -- for approvals --
    def park_in(self, tx: Tx, principal: Principal, agent_ref: str, run_id: str, *, task_id: str,
                lease_token: str) -> RunState:
        """The lease holder's run stops at gated calls, in ``tx``: ``awaiting_approval``, its task
        settled (done) so no lease or worker is held while it waits. Audited."""
        run = self._dataplane_run(tx, principal, agent_ref, run_id, lock=True)
        if run.lease_hash != lease_hash(lease_token) or run.task_id != task_id:
            raise LeaseLost(f"run {run_id}: this lease no longer holds the run")
        if run.status != RunStatus.RUNNING:
            raise Conflict(f"run {run_id} is {run.status.value}", code=ErrorCode.RUN_FINISHED)
        tx.execute(_Q.park_run, run_id)
        self.queue.complete_in(tx, task_id, lease_token)
        self.audit.append(tx, org_id=run.org_id, actor=principal.actor, action="run.awaiting_approval",
                          target=run_id, details={"attempt": run.attempt, "task_id": task_id})
        return run

    def resume_in(self, tx: Tx, run_id: str, *, actor: str) -> str | None:
        """Queue a parked run's resume on a new task, in ``tx`` (the decision's transaction, so it
        is enqueued exactly once); None when the run is not waiting (cancelled meanwhile)."""
        row = tx.fetch_one(_Q.awaiting_run_for_update, run_id)
        if row is None or row["status"] != RunStatus.AWAITING_APPROVAL:
            return None
        task_id = self.queue.enqueue(tx, kind=TASK_KIND, payload={"run_id": run_id, "resume": True}, run_id=run_id,
                                     org_id=row["org_id"], deployment_id=row["deployment_id"],
                                     max_attempts=row["max_attempts"])
        tx.execute(_Q.resume_run, task_id, run_id)
        self.audit.append(tx, org_id=row["org_id"], actor=actor, action="run.resume_enqueued", target=run_id,
                          details={"task_id": task_id})
        return task_id

    @staticmethod
    def starter_of(tx: Tx, run_id: str) -> str:
        """Who started the run (its ``created_by``)."""
        return str(tx.fetch_val(_Q.run_starter, run_id))

    def leased_run(self, tx: Tx, principal: Principal, task_id: str, lease_token: str) -> str:
        """The id of the run the task serves, if this data plane's lease holds it."""
        return self._checkpoint_run(tx, principal, task_id, lease_token)

    @staticmethod
    def record_remediation(tx: Tx, run_id: str, entry: RemediationEntry) -> None:
        """Add what an approved action did (or a refused stale call) to the run's remediation."""
        tx.execute(_Q.add_remediation, json.dumps(entry.as_json()), run_id)

def _unb64(data: str, path: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise Unprocessable("not valid base64", details=[{"path": path, "message": str(exc)}]) from exc


def _b64(data: bytes | memoryview) -> str:
    return base64.b64encode(bytes(data)).decode()
