"""Flow 3 end to end through the gateway with a real worker (HTTP) running the built-in agent with
LangGraph: an idle resource → the run waits ``awaiting_approval`` holding no lease → in-app
notification → approve → the stop executes once, the inventory shows it → ``remediated`` with the
saving. The same with reject and with expiry (injected clock); a worker killed during the resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from approvals_support import idle_focus
from runs_support import ROOT, Installed, claim, install_builtin, start_run, thread_worker
from support.http import RecordingServer, Reply
from support.wait import wait_until
from test_notifications import Inbox

from runtime.pool import source_paths
from shared.approvals import ApprovalService
from shared.kernel.net import free_port
from shared.notifications.adapters.slack_webhook import SlackWebhookPoster
from shared.notifications.adapters.smtp_email import SmtpEmail
from shared.webhooks import DestinationPolicy, SystemResolver

DONE = {"succeeded", "failed", "cancelled", "dead", "remediated"}


@pytest.fixture
def focus(agent_files: Path) -> tuple[Path, str]:
    path = agent_files / f"idle-{uuid.uuid4().hex}.csv"
    return path, idle_focus(path)


def _setup(container: Any, make_org: Any, anon: Any, settings: Any, member: Any, focus: tuple[Path, str]
           ) -> tuple[Installed, Any, Any]:
    inst = install_builtin(container, make_org, anon, settings, config={
        "billing_source": str(focus[0]), "remediation": "approve_and_execute"})
    seeded = inst.admin.post(f"/orgs/{inst.org_id}/cloud-resources/import", json={"focus_csv": focus[1]})
    assert seeded.status == 200, seeded
    assert {r["resource_id"]: r["state"] for r in seeded.body["items"]} == {
        "i-idle-1": "running", "i-busy-1": "running", "i-busy-2": "running"}
    return inst, member(inst.admin, inst.org_id, "operator"), member(inst.admin, inst.org_id, "approver")


def _run(inst: Installed, run_id: str) -> dict[str, Any]:
    return inst.admin.get(f"/agents/{inst.agent_id}/runs/{run_id}").body


def _resource(inst: Installed, resource_id: str) -> dict[str, Any]:
    items = inst.admin.get(f"/orgs/{inst.org_id}/cloud-resources").body["items"]
    return next(r for r in items if r["resource_id"] == resource_id)


def _pending(inst: Installed, run_id: str) -> list[dict[str, Any]]:
    return inst.admin.get(f"/orgs/{inst.org_id}/approvals?run_id={run_id}&status=pending").body["items"]


def test_approve_executes_once_and_the_run_ends_remediated(container, make_org, anon, settings, member, focus,
                                                           live_url, monkeypatch):
    inst, operator, approver = _setup(container, make_org, anon, settings, member, focus)
    # Email to a real SMTP server, Slack to a receiver: both channels of the org.
    inbox, port = Inbox(), free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    receiver = RecordingServer(lambda request: Reply(200, b"ok"))
    monkeypatch.setattr(container.notifications, "email", SmtpEmail("127.0.0.1", port, sender="m@example.com"))
    monkeypatch.setattr(container.notifications, "slack_poster", SlackWebhookPoster(
        DestinationPolicy(SystemResolver(), allow_loopback=True), timeout=5))
    assert inst.admin.put(f"/orgs/{inst.org_id}/notification-settings", json={
        "slack_webhook_url": f"{receiver.url}/services/T/B/X"}).status == 200
    run = start_run(operator, inst)
    with thread_worker(live_url, inst.key, lease_seconds=5):
        wait_until(lambda: _run(inst, run["id"])["status"] == "awaiting_approval", timeout=60,
                   what="the run to wait for approval")
        [approval] = _pending(inst, run["id"])
        assert approval["tool"] == "cloud.stop_instance" and approval["arguments"]["resource_id"] == "i-idle-1"
        assert approval["monthly_saving_micros"] > 0
        assert claim(anon, inst.key, wait=0) is None  # no task: the waiting run holds no lease
        assert _resource(inst, "i-idle-1")["state"] == "running"
        notes = approver.get("/me/notifications").body["items"]
        assert any(n["event"] == "approval.requested" and n["data"]["approval_id"] == approval["id"] for n in notes)
        try:
            container.notifications.deliver_due(limit=1000)
            [posted] = receiver.wait_for(1)
        finally:
            smtp.stop()
            receiver.close()
        assert f"{inst.org_id}:{approval['id']}" in json.dumps(posted.json()["blocks"])
        mailed = {to for m in inbox.messages for to in m.rcpt_tos}
        assert {approver.email, inst.admin.email} <= mailed and operator.email not in mailed
        resp = approver.post(f"/orgs/{inst.org_id}/approvals/{approval['id']}/approve", json={"comment": "ok"})
        assert resp.status == 200 and resp.body["status"] == "approved", resp
        wait_until(lambda: _run(inst, run["id"])["status"] in DONE, timeout=60, what="the run to end")
    final = _run(inst, run["id"])
    assert final["status"] == "remediated", final
    [entry] = [e for e in final["remediation"] if "outcome" in e]
    assert entry["approval_id"] == approval["id"] and entry["monthly_saving_micros"] == approval["monthly_saving_micros"]
    resource = _resource(inst, "i-idle-1")
    assert resource["state"] == "stopped" and len(resource["history"]) == 1  # executed once
    assert _resource(inst, "i-busy-1")["state"] == "running"
    assert final["outputs"]["remediations"][0]["executed"] is True
    audit = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    for action in ("approval.requested", "approval.decided", "approval.executing", "approval.executed",
                   "run.awaiting_approval", "run.resume_enqueued", "run.remediated"):
        assert action in audit, action
    # The run's remediated event reaches the approvers in-app, with what it saves.
    remediated = [n for n in approver.get("/me/notifications").body["items"] if n["event"] == "run.remediated"]
    assert [(n["data"]["run_id"], n["data"]["monthly_saving_micros"]) for n in remediated] == [
        (run["id"], approval["monthly_saving_micros"])]
    assert not [n for n in operator.get("/me/notifications").body["items"] if n["event"] == "run.remediated"]


def test_reject_resumes_on_the_not_approved_path(container, make_org, anon, settings, member, focus, live_url):
    inst, operator, approver = _setup(container, make_org, anon, settings, member, focus)
    run = start_run(operator, inst)
    with thread_worker(live_url, inst.key, lease_seconds=5):
        wait_until(lambda: _run(inst, run["id"])["status"] == "awaiting_approval", timeout=60, what="waiting")
        [approval] = _pending(inst, run["id"])
        assert approver.post(f"/orgs/{inst.org_id}/approvals/{approval['id']}/reject", json={}).status == 200
        wait_until(lambda: _run(inst, run["id"])["status"] in DONE, timeout=60, what="the run to end")
    final = _run(inst, run["id"])
    assert final["status"] == "succeeded", final
    assert final["outputs"]["remediations"][0] == {**final["outputs"]["remediations"][0], "executed": False,
                                                   "status": "rejected"}
    assert _resource(inst, "i-idle-1")["state"] == "running" and _resource(inst, "i-idle-1")["history"] == []


def test_expiry_resumes_on_the_not_approved_path(container, make_org, anon, settings, member, focus, live_url):
    inst, operator, _ = _setup(container, make_org, anon, settings, member, focus)
    run = start_run(operator, inst)
    with thread_worker(live_url, inst.key, lease_seconds=5):
        wait_until(lambda: _run(inst, run["id"])["status"] == "awaiting_approval", timeout=60, what="waiting")
        [approval] = _pending(inst, run["id"])
        later = ApprovalService(container.db, container.audit, container.orgs, container.runs,
                                clock=lambda: datetime.now(UTC) + timedelta(hours=73))
        assert approval["id"] in later.expire_due(limit=10_000)
        wait_until(lambda: _run(inst, run["id"])["status"] in DONE, timeout=60, what="the run to end")
    final = _run(inst, run["id"])
    assert final["status"] == "succeeded" and final["outputs"]["remediations"][0]["status"] == "expired"
    assert _resource(inst, "i-idle-1")["state"] == "running"


def test_a_worker_killed_during_the_resume_still_ends_remediated_once(container, make_org, anon, settings, member,
                                                                      focus, live_url):
    inst, operator, approver = _setup(container, make_org, anon, settings, member, focus)
    run = start_run(operator, inst)
    with thread_worker(live_url, inst.key, lease_seconds=5):
        wait_until(lambda: _run(inst, run["id"])["status"] == "awaiting_approval", timeout=60, what="waiting")
    [approval] = _pending(inst, run["id"])
    assert approver.post(f"/orgs/{inst.org_id}/approvals/{approval['id']}/approve", json={}).status == 200
    # A runner process takes the resume and is killed as soon as it holds the run.
    env = {**os.environ, "MARKETPLACE_CONTROL_PLANE_URL": live_url, "MARKETPLACE_DATAPLANE_KEY": inst.key,
           "MARKETPLACE_DATAPLANE_PORT": "0", "MARKETPLACE_DATAPLANE_HOST": "127.0.0.1",
           "MARKETPLACE_LEASE_SECONDS": "2", "MARKETPLACE_POLL_WAIT": "1", "MARKETPLACE_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join(source_paths())}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.runner"], env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:  # killed the moment it holds the resumed run (polled on the database, not through HTTP)
        wait_until(lambda: container.runs.status_of(run["id"]) != "queued", timeout=60, interval=0.002,
                   what="the resume to start")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert container.runs.status_of(run["id"]) == "running"  # the kill landed during the resume
    with thread_worker(live_url, inst.key, lease_seconds=5):
        wait_until(lambda: _run(inst, run["id"])["status"] in DONE, timeout=90, what="the run to end")
    final = _run(inst, run["id"])
    assert final["status"] == "remediated", final
    assert len([e for e in final["remediation"] if "outcome" in e]) == 1
    assert len(_resource(inst, "i-idle-1")["history"]) == 1
