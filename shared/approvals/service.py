"""Approvals: a gated tool call waits for a human decision bound to the exact action.

* A data plane reports the gated calls a run stopped at (``request``): in one transaction the run
  parks (``awaiting_approval``, its task settled: no lease is held while it waits), one approval per
  call is recorded with the action's RFC 8785 canonical JSON and its SHA-256, audited and
  announced (``approval.requested``).
* A decision (``decide``) locks the approval's row: a vote per distinct approver is recorded and
  the approval changes state only from ``pending``; any other concurrent or repeated decision gets
  409 with the winning decision. The transaction that decides the run's last pending approval also
  enqueues the run's resume, so the resume is enqueued exactly once.
* On resume, the data plane claims the execution with the call's own hash (``claim_execution``):
  a different hash is refused (``stale_approval``, recorded on the run); an execution recorded
  before is answered with its outcome, never executed twice.
* ``expire_due`` (scheduled, with an injected clock) expires what waited too long (its own state)
  and resumes the run on its "not approved" path; ``remind_due`` sends reminders before that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.approvals.canonical import action_hash, canonical_action
from shared.approvals.inventory import Inventory
from shared.approvals.models import (
    ApprovalListQuery,
    ApprovalNotice,
    ApprovalOut,
    ApprovalStatus,
    AwaitApprovalIn,
    AwaitApprovalOut,
    Decision,
    ExecutionClaimOut,
    PolicyIn,
    PolicyOut,
    TaskDecision,
    TaskDecisions,
    Vote,
)
from shared.approvals.ports import CloudResources, ResourceActionError
from shared.audit import AuditLog
from shared.identity import ANY_MEMBER, APPROVERS, Need, OrgService, Principal, decide
from shared.kernel.db.database import Database, Row, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, Forbidden, NotFound, Unavailable, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.pagination import Keyset, Page, next_page
from shared.runs import RemediationEntry, RunEvent, RunEventType, RunService, RunStatus

_Q = Queries("shared.approvals")


class ApprovalEvents(Protocol):
    """Where approval events are announced (webhooks), inside the transaction that records them."""

    def __call__(self, tx: Tx, *, org_id: str, event: str, data: Mapping[str, Any]) -> object:
        """Record ``event`` for ``org_id``; it commits or rolls back with the change."""
        ...


class ApprovalNotifier(Protocol):
    """Who hears about approvals (in-app, email, Slack): the notifications context, wired by the root."""

    def approval_event(self, tx: Tx, *, org_id: str, event: str, notice: ApprovalNotice) -> None:
        """Queue the notifications of ``event`` (``approval.requested``, ``approval.reminder``,
        ``approval.decided``, ``approval.expired``, ``run.remediated``) in ``tx``."""
        ...
SYSTEM_EXPIRY = "system:approval-expiry"
#: Tools the platform implements: applied here through the cloud-resources port (runtime/approvals.py
#: names the same ones).
PLATFORM_TOOLS = frozenset({"cloud.stop_instance", "cloud.resize_instance"})


def _now() -> datetime:
    return datetime.now(UTC)


def _out(row: Row, votes: list[Vote] | None = None) -> ApprovalOut:
    return ApprovalOut(**{k: row[k] for k in ApprovalOut.model_fields if k in row and k != "votes"},
                       votes=votes or [])


def _summary(row: Row | ApprovalOut) -> ApprovalNotice:
    """What events, notifications and 409 bodies say of an approval."""
    get = row.__getitem__ if isinstance(row, Mapping) else lambda k: getattr(row, k)
    decided_at = get("decided_at")
    return ApprovalNotice(approval_id=get("id"), run_id=get("run_id"), agent_id=get("agent_id"), tool=get("tool"),
                          status=str(get("status")), decided_by=get("decided_by"),
                          decided_at=decided_at.isoformat() if decided_at else None,
                          comment=get("decision_comment"), action_hash=get("action_hash"),
                          monthly_saving_micros=get("monthly_saving_micros"))


class ApprovalService:
    """Approvals of gated actions: request (data plane), read, decide, expire, execute once."""

    def __init__(self, db: Database, audit: AuditLog, orgs: OrgService, runs: RunService, *,
                 events: ApprovalEvents | None = None, resources: CloudResources | None = None,
                 clock: Callable[[], datetime] = _now) -> None:
        self.resources = resources
        self.inventory = Inventory(db, audit)  # the local adapter's table, as the org reads it
        self.db = db
        self.audit = audit
        self.orgs = orgs
        self.runs = runs
        self.events = events
        self.clock = clock
        self.notifier: ApprovalNotifier | None = None

    def use_notifier(self, notifier: ApprovalNotifier) -> None:
        """Wire the notifications context (it sits above this one)."""
        self.notifier = notifier

    def _announce(self, tx: Tx, org_id: str, event: str, notice: ApprovalNotice, *, webhook: bool = True) -> None:
        if webhook and self.events is not None:
            self.events(tx, org_id=org_id, event=event, data=notice.as_json())
        if self.notifier is not None:
            self.notifier.approval_event(tx, org_id=org_id, event=event, notice=notice)

    # -- policy --------------------------------------------------------------------------------
    def policy(self, org_id: str, tx: Tx | None = None) -> PolicyOut:
        """The org's policy (the defaults where it set none)."""
        if tx is None:
            with self.db.read() as own:
                row = own.fetch_one(_Q.policy, org_id)
        else:
            row = tx.fetch_one(_Q.policy, org_id)
        return PolicyOut(**row) if row is not None else PolicyOut()

    def put_policy(self, principal: Principal, org_id: str, body: PolicyIn) -> PolicyOut:
        """Change the org's policy (admins: the operation checks); audited."""
        with self.db.transaction() as tx:
            merged = self.policy(org_id, tx).model_copy(update=body.model_dump(exclude_none=True))
            if merged.reminder_seconds >= merged.expiry_seconds:
                from shared.kernel.errors import Unprocessable  # noqa: PLC0415 - the one use
                raise Unprocessable("the reminder must come before the expiry", details=[
                    {"path": "reminder_seconds", "message": "must be less than expiry_seconds"}])
            tx.execute(_Q.put_policy, org_id, merged.expiry_seconds, merged.reminder_seconds,
                       merged.required_approvals, merged.starter_may_approve, principal.actor)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="approval.policy_changed",
                              target=org_id, details=merged.model_dump())
        return merged

    # -- reads ---------------------------------------------------------------------------------
    def _votes(self, tx: Tx, ids: list[str]) -> dict[str, list[Vote]]:
        found: dict[str, list[Vote]] = {}
        if ids:
            for v in tx.fetch_all(_Q.votes_of, ids):
                found.setdefault(v["approval_id"], []).append(
                    Vote(approver=v["approver"], decision=v["decision"], comment=v["comment"],
                         created_at=v["created_at"]))
        return found

    def get(self, org_id: str, approval_id: str) -> ApprovalOut:
        """One approval of the org with its votes (the operation checked the caller's role)."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.approval, approval_id, org_id)
            if row is None:
                raise NotFound("approval not found")
            votes = self._votes(tx, [approval_id])
        return _out(row, votes.get(approval_id))

    def page(self, org_id: str, query: ApprovalListQuery) -> Page[ApprovalOut]:
        """The org's approvals, newest first, filtered, keyset-paginated."""
        after = Keyset.after(query.cursor)
        status = query.status.value if query.status else None
        with self.db.read() as tx:
            agent_id = query.agent_id
            if agent_id is not None and not agent_id.startswith("agt_"):
                agent_id = self.runs.catalog.agent_id_of(tx, agent_id) or agent_id
            rows = tx.fetch_all(_Q.approvals_page, org_id, status, status, agent_id, agent_id,
                                query.run_id, query.run_id, *after.params, query.limit + 1)
        items, cursor = next_page(rows, query.limit, lambda r: Keyset.of(r["created_at"], r["id"]))
        return Page[ApprovalOut](items=[_out(r) for r in items], next_cursor=cursor)

    # -- decisions -----------------------------------------------------------------------------
    def decide(self, principal: Principal, org_id: str, approval_id: str, decision: Decision,
               comment: str | None) -> ApprovalOut:
        """Record ``principal``'s decision. Exactly one decision wins: the approval's row is locked
        and changes only from ``pending``; every other decision gets 409 ``approval_decided`` with
        the winning decision in ``details``. A repeated vote of the same approver is a 409
        (``already_voted``) and distinct approvers count towards ``required_approvals``."""
        denied = decide(principal, Need(roles=APPROVERS, doing="decide approvals (approver or admin required)",
                                        unknown="approval not found"),
                        self.orgs.role_of(principal, org_id))
        if denied is not None:
            raise denied
        now = self.clock()
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.approval_for_update, approval_id, org_id)
            if row is None:
                raise NotFound("approval not found")
            if row["status"] != ApprovalStatus.PENDING:
                raise Conflict(f"this approval is {row['status']} already", code=ErrorCode.APPROVAL_DECIDED,
                               details=[{"decision": _summary(row).as_json()}])
            if row["expires_at"] <= now:
                self._expire(tx, row, now)
                raise _decided_after_expiry(row, now)
            if principal.actor == row["requested_by"] and not row["starter_may_approve"]:
                raise Forbidden("the user who started the run may not decide its actions (the org's policy)",
                                code=ErrorCode.STARTER_MAY_NOT_DECIDE)
            voted = tx.fetch_one(_Q.insert_vote, approval_id, principal.actor, decision, comment)
            if voted is None:
                raise Conflict("you decided this approval already", code=ErrorCode.ALREADY_VOTED,
                               details=[{"decision": _summary(row).as_json()}])
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action=f"approval.vote_{decision}",
                              target=approval_id, details={"run_id": row["run_id"], "comment": comment})
            approvals = int(tx.fetch_val(_Q.count_approvals, approval_id)) if decision == "approve" else 0
            status: ApprovalStatus | None = None
            if decision == "reject":
                status = ApprovalStatus.REJECTED
            elif approvals >= row["required_approvals"]:
                status = ApprovalStatus.APPROVED
            if status is not None:
                self._settle(tx, row, status, actor=principal.actor, now=now, comment=comment)
            row = tx.fetch_one(_Q.approval, approval_id, org_id)
            assert row is not None
            votes = self._votes(tx, [approval_id])
        return _out(row, votes.get(approval_id))

    def _settle(self, tx: Tx, row: Row, status: ApprovalStatus, *, actor: str, now: datetime,
                comment: str | None) -> None:
        """Move a pending approval (locked) to its final decision; resume the run when it was the
        run's last pending approval (in this transaction: enqueued exactly once)."""
        changed = tx.fetch_one(_Q.decide, status.value, actor, now, comment, row["id"])
        assert changed is not None, "the caller holds the pending approval's lock"
        action = "approval.expired" if status == ApprovalStatus.EXPIRED else "approval.decided"
        self.audit.append(tx, org_id=row["org_id"], actor=actor, action=action, target=row["id"],
                          details={"run_id": row["run_id"], "status": status.value, "tool": row["tool"],
                                   "action_hash": row["action_hash"], "comment": comment})
        notice = replace(_summary(row), status=status.value, decided_by=actor, decided_at=now.isoformat(),
                         comment=comment)
        # approval.expired is a notification; to webhooks an expiry is a decision like the others.
        self._announce(tx, row["org_id"], "approval.decided", notice)
        if status == ApprovalStatus.EXPIRED and self.notifier is not None:
            self.notifier.approval_event(tx, org_id=row["org_id"], event="approval.expired", notice=notice)
        if int(tx.fetch_val(_Q.pending_left, row["run_id"])) == 0:
            self.runs.resume_in(tx, row["run_id"], actor=actor)

    # -- expiry and reminders --------------------------------------------------------------------
    def _expire(self, tx: Tx, row: Row, now: datetime) -> None:
        self._settle(tx, row, ApprovalStatus.EXPIRED, actor=SYSTEM_EXPIRY, now=now, comment=None)

    def expire_due(self, *, limit: int = 200) -> list[str]:
        """Expire pending approvals past their time (each in its own transaction); returns their ids."""
        now = self.clock()
        with self.db.read() as tx:
            due = tx.fetch_all(_Q.due_expiry, now, limit)
        expired = []
        for candidate in due:
            with self.db.transaction() as tx:
                row = tx.fetch_one(_Q.approval_for_update, candidate["id"], candidate["org_id"])
                if row is None or row["status"] != ApprovalStatus.PENDING or row["expires_at"] > now:
                    continue
                self._expire(tx, row, now)
            expired.append(candidate["id"])
        return expired

    def remind_due(self, *, limit: int = 200) -> list[str]:
        """Send one reminder per pending approval whose reminder time came; returns their ids."""
        now = self.clock()
        with self.db.transaction() as tx:
            rows = tx.fetch_all(_Q.due_reminders, now, now, limit)
            for row in rows:
                self.audit.append(tx, org_id=row["org_id"], actor=SYSTEM_EXPIRY, action="approval.reminded",
                                  target=row["id"], details={"run_id": row["run_id"]})
                if self.notifier is not None:
                    self.notifier.approval_event(tx, org_id=row["org_id"], event="approval.reminder",
                                                 notice=ApprovalNotice(approval_id=row["id"], run_id=row["run_id"],
                                                                       tool=row["tool"],
                                                                       expires_at=row["expires_at"].isoformat()))
        return [r["id"] for r in rows]

    def cancel_for_run(self, tx: Tx, event: RunEvent) -> None:
        """A run event (the runs context's ``RunEvents``): a cancelled or failed run's pending
        approvals are cancelled with it."""
        if event.type not in (RunEventType.CANCELLED, RunEventType.FAILED):
            return
        for row in tx.fetch_all(_Q.cancel_pending_of_run, self.clock(), "system:run-ended", event.run_id):
            self.audit.append(tx, org_id=event.org_id, actor="system:run-ended", action="approval.cancelled",
                              target=row["id"], details={"run_id": event.run_id})

    # -- data plane ------------------------------------------------------------------------------
    def request(self, principal: Principal, agent_ref: str, run_id: str, body: AwaitApprovalIn) -> AwaitApprovalOut:
        """A run stopped at gated calls: park it (its lease released) and record an approval per call.

        The action each approval is bound to is rebuilt here from what the control plane knows
        (the run's agent and version) and the reported tool and arguments; a reported hash that
        does not match it is refused (422): the data plane cannot bind an approval to something
        other than what it shows.
        """
        now = self.clock()
        with self.db.transaction() as tx:
            run = self.runs.park_in(tx, principal, agent_ref, run_id, task_id=body.task_id,
                                    lease_token=body.lease_token)
            policy = self.policy(run.org_id, tx)
            requested_by = self.runs.starter_of(tx, run_id)
            created = []
            expected_digest = self.runs.code_digest_of(run.agent_id, run.version, tx)
            for index, action in enumerate(body.actions):
                if action.package_digest != expected_digest:
                    # The approval would bind code other than what the run's version is (issue 14).
                    raise Unprocessable(
                        f"the action's package digest is not the run's version's ({expected_digest})",
                        code=ErrorCode.PACKAGE_DIGEST_MISMATCH,
                        details=[{"path": f"actions[{index}].package_digest", "message": f"must be {expected_digest}"}])
                canonical = canonical_action(agent_id=run.agent_id, version=run.version,
                                             package_digest=action.package_digest, tool=action.tool,
                                             arguments=action.arguments, run_id=run_id,
                                             interrupt_id=action.interrupt_id)
                digest = action_hash(canonical)
                if digest != action.action_hash:
                    raise Unprocessable("the action's hash does not match its canonical JSON", details=[
                        {"path": "actions.action_hash", "message": "not the SHA-256 of the canonical action"}])
                approval_id = new_id("apr")
                expires = now + timedelta(seconds=policy.expiry_seconds)
                remind = expires - timedelta(seconds=policy.reminder_seconds) if policy.reminder_seconds else None
                inserted = tx.fetch_one(_Q.insert_approval, approval_id, run.org_id, run_id, run.agent_id,
                                        run.version, action.package_digest, action.tool,
                                        json.dumps(action.arguments), canonical.decode(), digest,
                                        action.interrupt_id, json.dumps(action.impact),
                                        action.monthly_saving_micros, requested_by, policy.required_approvals,
                                        policy.starter_may_approve, expires, remind, now)
                if inserted is None:
                    continue
                created.append(approval_id)
                self.audit.append(tx, org_id=run.org_id, actor=principal.actor, action="approval.requested",
                                  target=approval_id, details={"run_id": run_id, "tool": action.tool,
                                                               "action_hash": digest,
                                                               "impact": action.impact})
            rows = tx.fetch_all(_Q.approvals_of_run, run_id)
            for row in rows:
                if row["id"] in created:
                    self._announce(tx, run.org_id, "approval.requested",
                                   replace(_summary(row), impact=row["impact"],
                                           expires_at=row["expires_at"].isoformat()))
        return AwaitApprovalOut(run_id=run_id, status=RunStatus.AWAITING_APPROVAL.value,
                                approvals=[_out(r) for r in rows if r["status"] == ApprovalStatus.PENDING])

    def task_decisions(self, principal: Principal, task_id: str, lease_token: str) -> TaskDecisions:
        """The decided approvals of the task's run, for its resume (the lease holder only)."""
        with self.db.read() as tx:
            run_id = self.runs.leased_run(tx, principal, task_id, lease_token)
            rows = tx.fetch_all(_Q.approvals_of_run, run_id)
        return TaskDecisions(items=[TaskDecision(approval_id=r["id"], interrupt_id=r["interrupt_id"],
                                                 status=r["status"], action_hash=r["action_hash"], tool=r["tool"])
                                    for r in rows if r["status"] != ApprovalStatus.PENDING])

    def claim_execution(self, principal: Principal, task_id: str, approval_id: str, lease_token: str,
                        call_hash: str) -> ExecutionClaimOut:
        """May the lease holder execute the approved call whose own hash is ``call_hash``?

        Only an approved approval of the task's run, only with the approved hash: anything else is
        a 409 (``stale_approval``, recorded on the run, or ``not_approved``). An execution recorded
        before is answered (``execute: false``) so a redelivered resume never executes twice.
        """
        now = self.clock()
        stale: Row | None = None
        platform: Row
        with self.db.transaction() as tx:
            run_id = self.runs.leased_run(tx, principal, task_id, lease_token)
            row = tx.fetch_one(_Q.approval_of_run_for_update, approval_id, run_id)
            if row is None:
                raise NotFound("approval not found")
            if row["status"] != ApprovalStatus.APPROVED:
                raise Conflict(f"this approval is {row['status']}: the call may not execute",
                               code=ErrorCode.NOT_APPROVED, details=[{"decision": _summary(row).as_json()}])
            if row["action_hash"] != call_hash:
                stale = row
            elif row["executed_at"] is not None:
                return ExecutionClaimOut(approval_id=approval_id, execute=False, execution=row["execution"])
            else:
                tx.execute(_Q.claim_execution, now, approval_id)
                self.audit.append(tx, org_id=row["org_id"], actor=principal.actor, action="approval.executing",
                                  target=approval_id, details={"run_id": run_id, "action_hash": call_hash})
                if row["tool"] not in PLATFORM_TOOLS:
                    return ExecutionClaimOut(approval_id=approval_id, execute=True)
                platform = row
        if stale is None:
            return self._apply(principal, task_id, lease_token, platform)
        assert stale is not None
        with self.db.transaction() as tx:
            self.runs.record_remediation(tx, run_id, RemediationEntry(
                approval_id=approval_id, tool=stale["tool"], stale_approval=True, approved_hash=stale["action_hash"],
                call_hash=call_hash))
            self.audit.append(tx, org_id=stale["org_id"], actor=principal.actor, action="approval.stale",
                              target=approval_id, details={"run_id": run_id, "approved_hash": stale["action_hash"],
                                                           "call_hash": call_hash})
        raise Conflict("the call differs from the approved action: refused", code=ErrorCode.STALE_APPROVAL,
                       details=[{"approved_hash": stale["action_hash"], "call_hash": call_hash}])

    def _apply(self, principal: Principal, task_id: str, lease_token: str, row: Row) -> ExecutionClaimOut:
        """Apply a platform tool's approved action through the cloud-resources port, with the
        arguments that were approved (never the data plane's), and record its outcome."""
        if self.resources is None:
            raise Unavailable("no cloud-resources adapter is configured")
        arguments = row["arguments"]
        try:
            if row["tool"] == "cloud.stop_instance":
                outcome = self.resources.stop(row["org_id"], str(arguments["resource_id"])).as_json()
            else:
                outcome = self.resources.resize(row["org_id"], str(arguments["resource_id"]),
                                                str(arguments["machine_type"])).as_json()
        except ResourceActionError as exc:
            if exc.retryable:
                raise Unavailable(f"the cloud could not apply the action: {exc}") from exc
            outcome = {"error": str(exc), "applied": False}
        except KeyError as exc:
            outcome = {"error": f"the action lacks the argument {exc}", "applied": False}
        saving = row["monthly_saving_micros"] if "error" not in outcome else 0
        return self._record_execution(principal, task_id, row["id"], lease_token, outcome=outcome,
                                      saving_micros=saving, applied=True)

    def record_execution(self, principal: Principal, task_id: str, approval_id: str, lease_token: str, *,
                         outcome: dict[str, Any], saving_micros: int) -> ExecutionClaimOut:
        """Record what an approved call executed by the agent's own code did (once); the run's
        remediation gets it with the saving."""
        return self._record_execution(principal, task_id, approval_id, lease_token, outcome=outcome,
                                      saving_micros=saving_micros, applied=False)

    def _record_execution(self, principal: Principal, task_id: str, approval_id: str, lease_token: str, *,
                         outcome: dict[str, Any], saving_micros: int, applied: bool) -> ExecutionClaimOut:
        """Record what an approved call did (once); the run's remediation gets it with the saving."""
        now = self.clock()
        with self.db.transaction() as tx:
            run_id = self.runs.leased_run(tx, principal, task_id, lease_token)
            row = tx.fetch_one(_Q.approval_of_run_for_update, approval_id, run_id)
            if row is None:
                raise NotFound("approval not found")
            if row["executed_at"] is not None:
                return ExecutionClaimOut(approval_id=approval_id, execute=False, execution=row["execution"])
            if not applied and row["tool"] in PLATFORM_TOOLS:
                # The control plane applies platform tools and records their outcome itself.
                raise Conflict("a platform tool's outcome is recorded by the control plane",
                               code=ErrorCode.NOT_APPROVED)
            if row["status"] != ApprovalStatus.APPROVED or row["execution_started_at"] is None:
                raise Conflict("this approval's execution was not claimed", code=ErrorCode.NOT_APPROVED)
            execution = {"outcome": outcome, "monthly_saving_micros": saving_micros, "executed_at": now.isoformat()}
            tx.execute(_Q.record_execution, now, json.dumps(execution), approval_id)
            self.runs.record_remediation(tx, run_id, RemediationEntry(
                approval_id=approval_id, tool=row["tool"], outcome=outcome, monthly_saving_micros=saving_micros))
            self.audit.append(tx, org_id=row["org_id"], actor=principal.actor, action="approval.executed",
                              target=approval_id, details={"run_id": run_id, "outcome": outcome,
                                                           "monthly_saving_micros": saving_micros})
        return ExecutionClaimOut(approval_id=approval_id, execute=False, execution=execution)

    def run_visible(self, principal: Principal, org_id: str) -> None:
        """Any member may read approvals (the operation checks; here for direct service users)."""
        denied = decide(principal, Need(roles=ANY_MEMBER), self.orgs.role_of(principal, org_id))
        if denied is not None:
            raise denied


def _decided_after_expiry(row: Row, now: datetime) -> Conflict:
    notice = replace(_summary(row), status=ApprovalStatus.EXPIRED.value, decided_by=SYSTEM_EXPIRY,
                     decided_at=now.isoformat())
    return Conflict("this approval expired", code=ErrorCode.APPROVAL_DECIDED, details=[{"decision": notice.as_json()}])
