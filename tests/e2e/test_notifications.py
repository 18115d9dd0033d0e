"""Notifications: in-app (GET /me/notifications, mark read), email over SMTP against a real server
(aiosmtpd, started here) retried after a refused connection, Slack to a receiver with Approve/Reject
buttons, and Slack's signed callbacks (valid, wrong secret, old timestamp, replay, role check)."""

from __future__ import annotations

import email
import email.policy
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from aiosmtpd.controller import Controller
from approvals_support import park
from support.http import RecordingServer, Reply

from shared.kernel.net import free_port
from shared.notifications import slack_signature
from shared.notifications.adapters.slack_directory import SlackWebDirectory
from shared.notifications.adapters.slack_webhook import SlackWebhookPoster
from shared.notifications.adapters.smtp_email import SmtpEmail
from shared.webhooks import DestinationPolicy, SystemResolver

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def test_in_app_notifications_and_mark_read(container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member)
    approver = member(p.inst.admin, p.inst.org_id, "approver")  # joined after: sees only later events
    assert approver.get("/me/notifications").body["items"] == []
    admin_notes = p.inst.admin.get("/me/notifications?unread=true").body["items"]
    [note] = [n for n in admin_notes if n["data"].get("approval_id") == p.approvals[0]["id"]]
    assert note["event"] == "approval.requested" and "compute.stop_resource" in note["subject"]
    assert p.starter.get("/me/notifications").body["items"] == []  # an operator is not an approver
    assert approver.post(f"/me/notifications/{note['id']}/read").status == 404  # not theirs
    read = p.inst.admin.post(f"/me/notifications/{note['id']}/read")
    assert read.status == 200 and read.body["read_at"] is not None
    assert note["id"] not in {n["id"] for n in p.inst.admin.get("/me/notifications?unread=true").body["items"]}
    resp = approver.post(f"/orgs/{p.inst.org_id}/approvals/{p.approvals[0]['id']}/approve", json={})
    assert resp.status == 200
    decided = [n for n in approver.get("/me/notifications").body["items"] if n["event"] == "approval.decided"]
    assert decided and decided[0]["data"]["status"] == "approved"


def test_notifications_are_a_signed_in_users_only(container, make_org, anon, settings, member):
    """An org API key, even an admin's, is refused (403 user_required; a data-plane key 403 by the
    data-plane rule first) before anything is read or changed: notifications are a person's."""
    p = park(container, make_org, anon, settings, member)
    [note] = [n for n in p.inst.admin.get("/me/notifications").body["items"]
              if n["data"].get("approval_id") == p.approvals[0]["id"]]
    org_key = p.inst.admin.post(f"/orgs/{p.inst.org_id}/api-keys", json={"name": "n", "role": "admin"}).body["key"]
    for key, code in ((org_key, "user_required"), (p.inst.key, "forbidden")):
        listed = anon.get("/me/notifications", token=key)
        marked = anon.post(f"/me/notifications/{note['id']}/read", token=key)
        for resp in (listed, marked):
            assert resp.status == 403 and resp.body["error"]["code"] == code, resp
    again = [n for n in p.inst.admin.get("/me/notifications").body["items"] if n["id"] == note["id"]]
    assert again[0]["read_at"] is None  # nothing was marked


def test_email_is_retried_after_a_refused_connection(container, make_org, anon, settings, member, monkeypatch):
    port = free_port()  # nothing listens yet: the first attempt is refused
    notifications = container.notifications
    monkeypatch.setattr(notifications, "email", SmtpEmail("127.0.0.1", port, sender="marketplace@example.com",
                                                         timeout=5))
    p = park(container, make_org, anon, settings, member)
    queued = [d for d in notifications.deliveries(p.inst.org_id) if d.channel == "email"]
    assert [d.destination for d in queued] == [p.inst.admin.email]
    notifications.deliver_due(limit=1000)
    [first] = [d for d in notifications.deliveries(p.inst.org_id) if d.channel == "email"]
    assert first.status == "pending" and first.attempts == 1 and "refused" in (first.last_error or "").lower()
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setattr(notifications, "clock", lambda: datetime.now(UTC) + timedelta(minutes=5))
        notifications.deliver_due(limit=1000)
    finally:
        controller.stop()
    [done] = [d for d in notifications.deliveries(p.inst.org_id) if d.channel == "email"]
    assert done.status == "delivered" and done.attempts == 2
    [message] = [m for m in inbox.messages if p.inst.admin.email in m.rcpt_tos]
    parsed = email.message_from_bytes(message.content, policy=email.policy.default)
    assert parsed["Subject"] == "Approval needed: compute.stop_resource"
    assert p.approvals[0]["id"] in parsed.get_content()  # type: ignore[attr-defined]


def _action(org_id: str, approval_id: str, user: str = "U1", action: str = "approve") -> bytes:
    payload = {"type": "block_actions", "user": {"id": user},
               "actions": [{"action_id": action, "value": f"{org_id}:{approval_id}"}]}
    return urlencode({"payload": json.dumps(payload)}).encode()


def _post(anon: Any, body: bytes, *, secret: str = SECRET, at: int | None = None, signature: str | None = None) -> Any:
    stamp = str(at if at is not None else int(time.time()))
    return anon.post("/integrations/slack/actions", data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature or slack_signature(secret, stamp, body)})


@pytest.fixture
def slack(container: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    emails: dict[str, str] = {}

    def users_info(request: Any) -> Reply:
        user = request.query.get("user", "")
        if user not in emails or request.headers.get("authorization") != "Bearer xoxb-test":
            return Reply(200, {"ok": False, "error": "user_not_found"})
        return Reply(200, {"ok": True, "user": {"id": user, "profile": {"email": emails[user]}}})

    with RecordingServer(lambda request: Reply(200, b"ok")) as hook, RecordingServer(users_info) as api:
        notifications = container.notifications
        monkeypatch.setattr(notifications, "slack_poster", SlackWebhookPoster(
            DestinationPolicy(SystemResolver(), allow_loopback=True), timeout=5))
        monkeypatch.setattr(notifications, "directory", SlackWebDirectory(api.url))
        yield type("Slack", (), {"hook": hook, "api": api, "emails": emails})


def test_slack_gets_buttons_and_signed_actions_decide(container, make_org, anon, settings, member, slack):
    inst_admin, org_id = make_org()
    from runs_support import install_builtin
    inst = install_builtin(container, make_org, anon, settings, org=(inst_admin, org_id))
    resp = inst.admin.put(f"/orgs/{org_id}/notification-settings", json={
        "slack_webhook_url": f"{slack.hook.url}/services/T/B/X", "slack_signing_secret": SECRET,
        "slack_bot_token": "xoxb-test"})
    assert resp.status == 200 and resp.body == {"email_enabled": True, "slack_webhook": True,
                                                "slack_signing_secret": True, "slack_bot_token": True}
    assert SECRET not in json.dumps(inst.admin.get(f"/orgs/{org_id}/audit?limit=50").body)
    p = park(container, make_org, anon, settings, member, inst=inst)
    approval = p.approvals[0]
    container.notifications.deliver_due(limit=1000)
    [posted] = slack.hook.wait_for(1)
    message = posted.json()
    buttons = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
    assert [(b["action_id"], b["value"]) for b in buttons] == [("approve", f"{org_id}:{approval['id']}"),
                                                               ("reject", f"{org_id}:{approval['id']}")]
    approver = member(inst.admin, org_id, "approver")
    viewer = member(inst.admin, org_id, "viewer")
    slack.emails.update({"U-APPROVER": approver.email, "U-VIEWER": viewer.email, "U-STRANGER": "x@example.org"})
    # wrong secret, old timestamp, garbage signature: refused, nothing decided
    assert _post(anon, _action(org_id, approval["id"], "U-APPROVER"), secret="not-the-secret").status == 401
    old = int(time.time()) - 301
    resp = _post(anon, _action(org_id, approval["id"], "U-APPROVER"), at=old)
    assert resp.status == 401 and resp.body["error"]["code"] == "bad_signature"
    assert _post(anon, b"payload=%7B%7D", signature="v0=00").status in (400, 401)
    # a viewer's click and a stranger's are answered but decide nothing
    assert "Not recorded" in _post(anon, _action(org_id, approval["id"], "U-VIEWER")).body["text"]
    assert "not a member" in _post(anon, _action(org_id, approval["id"], "U-STRANGER")).body["text"]
    assert inst.admin.get(f"/orgs/{org_id}/approvals/{approval['id']}").body["status"] == "pending"
    # the approver's signed click decides, once; the same request again is a replay
    body, stamp = _action(org_id, approval["id"], "U-APPROVER"), int(time.time())
    resp = _post(anon, body, at=stamp)
    assert resp.status == 200 and "approved" in resp.body["text"], resp
    decided = inst.admin.get(f"/orgs/{org_id}/approvals/{approval['id']}").body
    assert decided["status"] == "approved" and decided["decided_by"] == f"user:{approver.user_id}"
    replay = _post(anon, body, at=stamp)
    assert replay.status == 409 and replay.body["error"]["code"] == "replayed"


def test_bad_settings_are_refused(make_org):
    admin, org_id = make_org()
    resp = admin.put(f"/orgs/{org_id}/notification-settings", json={"slack_webhook_url": "http://10.0.0.1/x"})
    assert resp.status == 422 and resp.body["error"]["details"][0]["path"] == "slack_webhook_url"
    assert admin.get(f"/orgs/{org_id}/notification-settings").body["slack_webhook"] is False
