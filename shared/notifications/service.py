"""Notifications: who hears about approvals, and how (in-app, email over SMTP, Slack).

An approval event (``approval_event``, called by the approvals context inside the transaction
that records the event) writes one in-app notification per approver and admin of the org and
queues the org's email and Slack deliveries in an outbox (``notification_deliveries``), so a
notification exists exactly when its event committed. ``deliver_due`` (scheduled) sends what is
due, each row leased for a minute while it is sent, and retries failures with exponential backoff
(2 s doubling, at most an hour apart) up to ``MAX_ATTEMPTS``, as webhook deliveries do.

Slack's Approve/Reject buttons come back to ``slack_action``: the request must carry the org's
Slack signing secret's signature over the exact body within 5 minutes, a signature is accepted
once (replays are refused), and the Slack user is mapped by the email of their Slack profile to a
member of the org, whose role the approvals context checks as for any other decision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from shared.approvals import ApprovalNotice, ApprovalService
from shared.audit import AuditLog
from shared.identity import ADMIN, APPROVERS, OrgService, Principal, Role
from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import AppError, BadRequest, Conflict, ErrorCode, NotFound, Unauthorized
from shared.kernel.ids import new_id
from shared.kernel.pagination import Keyset, Page, next_page
from shared.kernel.redaction import redact_text
from shared.notifications import slack
from shared.notifications.models import (
    Delivery,
    DeliveryReport,
    NotificationOut,
    NotificationQuery,
    NotificationSettingsIn,
    NotificationSettingsOut,
    SlackActionOut,
)
from shared.notifications.ports import DeliveryError, EmailSender, SlackDirectory, SlackPoster
from shared.runs import RunEvent, RunEventType
from shared.secrets import SecretKeys

_log = logging.getLogger(__name__)
_Q = Queries("shared.notifications")

MAX_ATTEMPTS = 8
LEASE = timedelta(seconds=60)
_SLACK_URL, _SLACK_SIGNING, _SLACK_BOT = "slack_webhook_url", "slack_signing_secret", "slack_bot_token"


def _now() -> datetime:
    return datetime.now(UTC)


def backoff(attempts: int) -> timedelta:
    """How long after a failed attempt the next one is due: 2 s doubling, at most an hour."""
    return timedelta(seconds=min(3600, 2 ** max(1, attempts)))


def _usd(micros: Any) -> str:
    return f"${int(micros or 0) / 1_000_000:,.2f}"


def _text(event: str, a: ApprovalNotice) -> tuple[str, str]:
    """Subject and body of an event's notification."""
    tool, run = a.tool or "an action", a.run_id
    saving = _usd(a.monthly_saving_micros)
    if event == "approval.requested":
        impact = a.impact or {}
        what = impact.get("what") or impact.get("summary") or tool
        return (f"Approval needed: {tool}",
                f"Run {run} asks to execute {tool}: {what}. Estimated monthly saving {saving}. "
                f"Approval {a.approval_id} expires at {a.expires_at}.")
    if event == "approval.reminder":
        return (f"Reminder: approval needed for {tool}",
                f"Approval {a.approval_id} for run {run} expires at {a.expires_at}.")
    if event == "approval.decided":
        return (f"Approval {a.status}: {tool}",
                f"Approval {a.approval_id} for run {run} was {a.status} by {a.decided_by}.")
    if event == "approval.expired":
        return (f"Approval expired: {tool}",
                f"Approval {a.approval_id} for run {run} expired without a decision; the action "
                "was not executed.")
    return (f"Run remediated: {run}",
            f"Run {run} ended remediated; estimated monthly saving {saving}.")


class NotificationService:
    """In-app notifications, the email and Slack outbox, the org's channel settings, Slack actions."""

    def __init__(self, db: Database, audit: AuditLog, orgs: OrgService, secrets: SecretKeys,
                 approvals: ApprovalService, *, email: EmailSender | None = None, slack_poster: SlackPoster,
                 directory: SlackDirectory, clock: Callable[[], datetime] = _now) -> None:
        self.db = db
        self.audit = audit
        self.orgs = orgs
        self.secrets = secrets
        self.approvals = approvals
        self.email = email
        self.slack_poster = slack_poster
        self.directory = directory
        self.clock = clock

    # -- events ----------------------------------------------------------------------------------
    def approval_event(self, tx: Tx, *, org_id: str, event: str, notice: ApprovalNotice) -> None:
        """Notify the org's approvers and admins of ``event`` in ``tx`` (in-app now; email and
        Slack queued in the outbox)."""
        data = {**notice.as_json(), "org_id": org_id}
        subject, body = _text(event, notice)
        self._notify(tx, org_id=org_id, event=event, data=data, roles=APPROVERS, subject=subject, body=body)

    def billing_event(self, tx: Tx, *, org_id: str, event: str, data: Mapping[str, Any]) -> None:
        """Notify the org's admins of a billing event (``billing.budget_threshold``) in ``tx``
        (billing's ``BillingNotifier``): in-app now; email and Slack queued in the outbox."""
        if event != "billing.budget_threshold":
            return
        subject = f"Budget alert: {data.get('percent')} % of this month's budget committed"
        body = (f"This month's committed spend (charged and reserved by running runs) is "
                f"{data.get('committed_usd')} USD of the org's {data.get('budget_usd')} USD budget "
                f"({data.get('period')}).")
        self._notify(tx, org_id=org_id, event=event, data={**data, "org_id": org_id}, roles=ADMIN,
                     subject=subject, body=body)

    def _notify(self, tx: Tx, *, org_id: str, event: str, data: Mapping[str, Any], roles: frozenset[Role],
                subject: str, body: str) -> None:
        """One in-app notification per member of the org holding one of ``roles``, and the org's
        email (per recipient) and Slack (once) deliveries queued in the outbox."""
        now = self.clock()
        recipients = self.orgs.members_with(tx, org_id, roles)
        for m in recipients:
            tx.execute(_Q.insert_notification, new_id("ntf"), org_id, m.user_id, event, subject, body,
                       json.dumps(data, default=str), now)
        settings = tx.fetch_one(_Q.settings, org_id)
        if self.email is not None and (settings is None or settings["email_enabled"]):
            for m in recipients:
                tx.execute(_Q.insert_delivery, new_id("ndl"), org_id, "email", m.email, event,
                           json.dumps({"subject": subject, "body": body}), now)
        if settings is not None and settings["slack_webhook_sealed"] is not None:
            message = slack.approval_message(data, event=event, text=f"*{subject}*\n{body}")
            tx.execute(_Q.insert_delivery, new_id("ndl"), org_id, "slack", "slack", event, json.dumps(message), now)

    def run_event(self, tx: Tx, event: RunEvent) -> None:
        """A run event (the runs context's ``RunEvents``): ``run.remediated`` is notified."""
        if event.type == RunEventType.REMEDIATED:
            self.approval_event(tx, org_id=event.org_id, event=event.type.value, notice=ApprovalNotice(
                approval_id=None, run_id=event.run_id, agent_id=event.agent_id,
                monthly_saving_micros=event.monthly_saving_micros))

    # -- in-app ----------------------------------------------------------------------------------
    def page(self, user_id: str, query: NotificationQuery) -> Page[NotificationOut]:
        """User ``user_id``'s notifications, newest first (that only the user reads them is the
        operation's decision: ``user=True``, shared/identity/access.py)."""
        after = Keyset.after(query.cursor)
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.notifications_page, user_id, query.unread, *after.params, query.limit + 1)
        items, cursor = next_page(rows, query.limit, lambda r: Keyset.of(r["created_at"], r["id"]))
        return Page[NotificationOut](items=[NotificationOut(**r) for r in items], next_cursor=cursor)

    def mark_read(self, user_id: str, notification_id: str) -> NotificationOut:
        """Mark one of user ``user_id``'s notifications read (idempotent); another's is not found."""
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.mark_read, self.clock(), notification_id, user_id)
        if row is None:
            raise NotFound("notification not found")
        return NotificationOut(**row)

    # -- settings ----------------------------------------------------------------------------------
    def settings(self, org_id: str) -> NotificationSettingsOut:
        """Which channels the org configured (never the secrets)."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.settings, org_id)
        return self._settings_out(row)

    @staticmethod
    def _settings_out(row: Mapping[str, Any] | None) -> NotificationSettingsOut:
        if row is None:
            return NotificationSettingsOut()
        return NotificationSettingsOut(email_enabled=row["email_enabled"],
                                       slack_webhook=row["slack_webhook_sealed"] is not None,
                                       slack_signing_secret=row["slack_signing_sealed"] is not None,
                                       slack_bot_token=row["slack_bot_sealed"] is not None)

    def put_settings(self, principal: Principal, org_id: str, body: NotificationSettingsIn) -> NotificationSettingsOut:
        """Change the org's channels (admins: the operation checks); secrets are sealed; audited
        without them."""
        if body.slack_webhook_url:
            problem = self.slack_poster.problem(body.slack_webhook_url)
            if problem is not None:
                from shared.kernel.errors import Unprocessable  # noqa: PLC0415
                raise Unprocessable("the Slack webhook URL is refused", details=[
                    {"path": "slack_webhook_url", "message": problem}])
        with self.db.transaction() as tx:
            row = dict(tx.fetch_one(_Q.settings, org_id) or {
                "email_enabled": True, "slack_webhook_sealed": None, "slack_signing_sealed": None,
                "slack_bot_sealed": None})
            if body.email_enabled is not None:
                row["email_enabled"] = body.email_enabled
            for value, column, purpose in (
                    (body.slack_webhook_url, "slack_webhook_sealed", _SLACK_URL),
                    (body.slack_signing_secret.get_secret_value() if body.slack_signing_secret else None,
                     "slack_signing_sealed", _SLACK_SIGNING),
                    (body.slack_bot_token.get_secret_value() if body.slack_bot_token else None,
                     "slack_bot_sealed", _SLACK_BOT)):
                if value is not None:
                    row[column] = self.secrets.seal(org_id, purpose, org_id, value.encode()) if value else None
            tx.execute(_Q.put_settings, org_id, row["email_enabled"], row["slack_webhook_sealed"],
                       row["slack_signing_sealed"], row["slack_bot_sealed"])
            out = self._settings_out(row)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="notifications.settings_changed",
                              target=org_id, details=out.model_dump())
        return out

    def _open(self, org_id: str, purpose: str, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        return self.secrets.open(org_id, purpose, org_id, bytes(sealed), reader="system:notifications").decode()

    # -- the outbox --------------------------------------------------------------------------------
    def deliver_due(self, *, limit: int = 100) -> DeliveryReport:
        """Send the deliveries that are due; failures are retried later with backoff."""
        now = self.clock()
        with self.db.transaction() as tx:
            due = tx.fetch_all(_Q.claim_due, now + LEASE, now, limit)
        report = DeliveryReport(delivered=0, retried=0, failed=0)
        for row in due:
            try:
                self._send(row)
            except DeliveryError as exc:
                error = redact_text(str(exc))[:500]
                with self.db.transaction() as tx:
                    if exc.retryable and row["attempts"] < MAX_ATTEMPTS:
                        tx.execute(_Q.retry_later, now + backoff(row["attempts"]), error, row["id"])
                        report.retried += 1
                    else:
                        tx.execute(_Q.give_up, error, row["id"])
                        report.failed += 1
                _log.warning("notification delivery failed", extra={"fields": {
                    "delivery_id": row["id"], "channel": row["channel"], "attempt": row["attempts"], "error": error}})
                continue
            with self.db.transaction() as tx:
                tx.execute(_Q.delivered, self.clock(), row["id"])
            report.delivered += 1
        return report

    def _send(self, row: Mapping[str, Any]) -> None:
        payload = row["payload"]
        if row["channel"] == "email":
            if self.email is None:
                raise DeliveryError("email is not configured (MARKETPLACE_SMTP_HOST)", retryable=False)
            self.email.send(to=row["destination"], subject=payload["subject"], body=payload["body"])
            return
        with self.db.read() as tx:
            settings = tx.fetch_one(_Q.settings, row["org_id"])
        url = self._open(row["org_id"], _SLACK_URL, settings["slack_webhook_sealed"] if settings else None)
        if url is None:
            raise DeliveryError("the org removed its Slack webhook", retryable=False)
        self.slack_poster.post(url, payload)

    def deliveries(self, org_id: str) -> list[Delivery]:
        """The org's outbox, oldest first (tests and operators)."""
        with self.db.read() as tx:
            return [Delivery(**r) for r in tx.fetch_all(_Q.deliveries_of, org_id)]

    # -- Slack's buttons -------------------------------------------------------------------------
    def slack_action(self, headers: Mapping[str, str], raw_body: bytes) -> SlackActionOut:
        """Decide an approval from Slack's Approve/Reject button (signed, fresh, once, by a member
        whose role allows it)."""
        try:
            form = parse_qs(raw_body.decode("utf-8"), strict_parsing=True)
            payload = json.loads(form["payload"][0])
            action = payload["actions"][0]
            decision, value = action["action_id"], action["value"]
            slack_user = payload["user"]["id"]
            org_id, _, approval_id = value.partition(":")
        except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("not a Slack interactive action payload") from exc
        if decision not in ("approve", "reject") or not org_id or not approval_id:
            raise BadRequest("not an approval action")
        with self.db.read() as tx:
            settings = tx.fetch_one(_Q.settings, org_id)
        secret = self._open(org_id, _SLACK_SIGNING, settings["slack_signing_sealed"] if settings else None)
        if secret is None:
            raise Unauthorized("the request signature does not verify", code=ErrorCode.BAD_SIGNATURE)
        problem = slack.verify(secret, timestamp=headers.get("X-Slack-Request-Timestamp", ""),
                               sent=headers.get("X-Slack-Signature", ""), body=raw_body,
                               now=self.clock().timestamp())
        if problem is not None:
            raise Unauthorized(problem, code=ErrorCode.BAD_SIGNATURE)
        with self.db.transaction() as tx:
            tx.execute(_Q.forget_old_signatures, self.clock() - timedelta(days=1))
            fresh = tx.fetch_one(_Q.remember_signature, headers.get("X-Slack-Signature", ""))
        if fresh is None:
            raise Conflict("this Slack request was processed already", code=ErrorCode.REPLAYED)
        assert settings is not None
        token = self._open(org_id, _SLACK_BOT, settings["slack_bot_sealed"])
        email = self.directory.email_of(token, slack_user) if token else None
        with self.db.read() as tx:
            member = next((m for m in self.orgs.members_in(tx, org_id)
                           if email is not None and m.email.lower() == email.lower()), None)
        if member is None:
            return SlackActionOut(text="Your Slack account is not a member of this organisation on the marketplace.")
        principal = Principal(kind="user", subject=member.user_id, email=member.email)
        try:
            decided = self.approvals.decide(principal, org_id, approval_id, decision, "via Slack")
        except AppError as exc:
            if exc.status in (403, 404, 409):
                return SlackActionOut(text=f"Not recorded: {exc.message}")
            raise
        return SlackActionOut(text=f"Recorded: approval {decided.id} is {decided.status.value}.")
