"""Approvals through the gateway: the record, the API, roles, policy, exactly one decision, the
resume enqueued once, expiry with an injected clock, and the execution claim bound to the hash."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from approvals_support import builtin_digest, park, proposed
from runs_support import claim, install_builtin

from shared.approvals import ApprovalService


def _path(p: Any, approval: dict[str, Any], verb: str = "") -> str:
    return f"/orgs/{p.inst.org_id}/approvals/{approval['id']}" + (f"/{verb}" if verb else "")


def _run(p: Any) -> dict[str, Any]:
    resp = p.inst.admin.get(f"/agents/{p.inst.agent_id}/runs/{p.run['id']}")
    assert resp.status == 200, resp
    return resp.body


def _audit_actions(p: Any) -> list[str]:
    return [e["action"] for e in p.inst.admin.get(f"/orgs/{p.inst.org_id}/audit?limit=200").body["items"]]


def test_a_parked_run_holds_no_lease_and_its_approval_is_bound_to_the_action(container, make_org, anon, settings,
                                                                             member):
    p = park(container, make_org, anon, settings, member)
    [approval] = p.approvals
    assert approval["status"] == "pending" and approval["tool"] == "compute.stop_resource"
    assert approval["action_hash"] == proposed(p.run)["action_hash"]
    assert approval["requested_by"] == p.run["created_by"] and approval["monthly_saving_micros"] == 120_000_000
    assert approval["version"] == p.run["version"] and approval["package_digest"] == builtin_digest()
    assert _run(p)["status"] == "awaiting_approval"
    assert claim(anon, p.inst.key, wait=0) is None  # the task is settled: nothing to lease while it waits
    # list with filters, read one
    admin = p.inst.admin
    listed = admin.get(f"/orgs/{p.inst.org_id}/approvals?status=pending&run_id={p.run['id']}").body["items"]
    assert [a["id"] for a in listed] == [approval["id"]]
    assert admin.get(f"/orgs/{p.inst.org_id}/approvals?status=approved").body["items"] == []
    assert admin.get(f"/orgs/{p.inst.org_id}/approvals?agent_id=cost-anomaly-detector").body["items"]
    assert admin.get(_path(p, approval)).body["id"] == approval["id"]
    assert "approval.requested" in _audit_actions(p) and "run.awaiting_approval" in _audit_actions(p)


def test_a_wrong_hash_is_refused_and_changes_nothing(container, make_org, anon, settings, member):
    inst = install_builtin(container, make_org, anon, settings)
    run = member(inst.admin, inst.org_id, "operator").post(
        f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id}).body
    task = claim(anon, inst.key)
    bad = {**proposed(run), "action_hash": "0" * 64}
    resp = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/await-approval", token=inst.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"], "actions": [bad]})
    assert resp.status == 422, resp
    assert inst.admin.get(f"/agents/{inst.agent_id}/runs/{run['id']}").body["status"] == "running"
    resp = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/await-approval", token=inst.key, json={
        "task_id": task["task_id"], "lease_token": "not-the-lease", "actions": [proposed(run)]})
    assert resp.status == 409 and resp.body["error"]["code"] == "lease_lost"


def test_an_action_naming_other_code_is_refused(container, make_org, anon, settings, member):
    """issue 14: the package digest an action reports must be the run's version's (its package's
    sha256, or for a version without one its canonical manifest's, as runtime/approvals.py computes)."""
    from runtime.approvals import package_digest

    inst = install_builtin(container, make_org, anon, settings)
    run = member(inst.admin, inst.org_id, "operator").post(
        f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id}).body
    task = claim(anon, inst.key)
    assert package_digest(task["manifest"]) == builtin_digest()  # the data plane's own computation agrees
    other = proposed(run, digest="sha256:" + "a" * 64)  # its hash is right: only the digest is wrong
    resp = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/await-approval", token=inst.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"], "actions": [other]})
    assert (resp.status, resp.body["error"]["code"]) == (422, "package_digest_mismatch"), resp
    assert resp.body["error"]["details"][0]["path"] == "actions[0].package_digest"
    assert inst.admin.get(f"/agents/{inst.agent_id}/runs/{run['id']}").body["status"] == "running"
    assert inst.admin.get(f"/orgs/{inst.org_id}/approvals").body["items"] == []
    resp = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/await-approval", token=inst.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"], "actions": [proposed(run)]})
    assert resp.status == 200, resp


def test_approve_resumes_the_run_once_and_the_call_executes_only_with_the_approved_hash(
        container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member)
    [approval] = p.approvals
    approver = member(p.inst.admin, p.inst.org_id, "approver")
    resp = approver.post(_path(p, approval, "approve"), json={"comment": "go"})
    assert resp.status == 200, resp
    assert resp.body["status"] == "approved" and resp.body["decided_by"].startswith("user:")
    assert resp.body["decision_comment"] == "go" and len(resp.body["votes"]) == 1
    again = approver.post(_path(p, approval, "reject"), json={})
    assert again.status == 409 and again.body["error"]["code"] == "approval_decided"
    assert again.body["error"]["details"][0]["decision"]["status"] == "approved"
    assert _run(p)["status"] == "queued"
    task = claim(anon, p.inst.key)
    assert task is not None and task["run_id"] == p.run["id"]
    assert claim(anon, p.inst.key, wait=0) is None  # the resume was enqueued exactly once
    lease = {"X-Lease-Token": task["lease_token"]}
    decisions = anon.get(f"/tasks/{task['task_id']}/approvals", token=p.inst.key, headers=lease).body["items"]
    assert [(d["approval_id"], d["status"]) for d in decisions] == [(approval["id"], "approved")]
    base = f"/tasks/{task['task_id']}/approvals/{approval['id']}"
    changed = proposed(p.run, arguments={"resource_id": "vm-other", "action": "stop"})["action_hash"]
    stale = anon.post(f"{base}/execution", token=p.inst.key, json={"lease_token": task["lease_token"],
                                                                   "action_hash": changed})
    assert stale.status == 409 and stale.body["error"]["code"] == "stale_approval"
    ok = anon.post(f"{base}/execution", token=p.inst.key, json={"lease_token": task["lease_token"],
                                                                "action_hash": approval["action_hash"]})
    assert ok.status == 200 and ok.body["execute"] is True
    done = anon.post(f"{base}/outcome", token=p.inst.key, json={
        "lease_token": task["lease_token"], "outcome": {"state": "stopped"}, "monthly_saving_micros": 120_000_000})
    assert done.status == 200, done
    replay = anon.post(f"{base}/execution", token=p.inst.key, json={"lease_token": task["lease_token"],
                                                                    "action_hash": approval["action_hash"]})
    assert replay.status == 200 and replay.body["execute"] is False  # an approval is used once
    assert replay.body["execution"]["outcome"] == {"state": "stopped"}
    complete = anon.post(f"/agents/{p.inst.agent_id}/runs/{p.run['id']}/complete", token=p.inst.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"], "status": "succeeded",
        "outputs": {}, "metrics": {"records_processed": 1, "cpu_seconds": 0}})
    assert complete.status == 200 and complete.body["status"] == "remediated", complete
    run = _run(p)
    assert run["status"] == "remediated"
    assert any(e.get("stale_approval") for e in run["remediation"])
    assert [e["monthly_saving_micros"] for e in run["remediation"] if "outcome" in e] == [120_000_000]
    actions = _audit_actions(p)
    for expected in ("approval.decided", "approval.stale", "approval.executing", "approval.executed",
                     "run.resume_enqueued", "run.remediated"):
        assert expected in actions, expected


def test_reject_resumes_on_the_not_approved_path(container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member)
    [approval] = p.approvals
    resp = p.inst.admin.post(_path(p, approval, "reject"), json={"comment": "too risky"})
    assert resp.status == 200 and resp.body["status"] == "rejected"
    task = claim(anon, p.inst.key)
    assert task is not None
    resp = anon.post(f"/tasks/{task['task_id']}/approvals/{approval['id']}/execution", token=p.inst.key,
                     json={"lease_token": task["lease_token"], "action_hash": approval["action_hash"]})
    assert resp.status == 409 and resp.body["error"]["code"] == "not_approved"


def test_one_hundred_concurrent_decisions_exactly_one_wins(container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member)
    [approval] = p.approvals
    deciders = [p.inst.admin] + [member(p.inst.admin, p.inst.org_id, "approver") for _ in range(9)]
    results: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(100)

    def decide(i: int) -> None:
        client = deciders[i % len(deciders)]
        verb = "approve" if i % 2 else "reject"
        start.wait()
        resp = client.post(_path(p, approval, verb), json={"comment": f"#{i}"})
        with lock:
            results.append(resp)

    # The admin did not start the run (an operator did), so every decider may decide.
    threads = [threading.Thread(target=decide, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if r.status == 200]
    lost = [r for r in results if r.status == 409]
    assert len(won) == 1 and len(lost) == 99, sorted(r.status for r in results)
    winner = won[0].body
    for r in lost:
        assert r.body["error"]["code"] == "approval_decided"
        assert r.body["error"]["details"][0]["decision"]["status"] == winner["status"]
        assert r.body["error"]["details"][0]["decision"]["decided_by"] == winner["decided_by"]
    # exactly one resume task
    assert claim(anon, p.inst.key) is not None
    assert claim(anon, p.inst.key, wait=0) is None


def test_who_may_decide(container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member)
    [approval] = p.approvals
    for role in ("viewer", "operator", "developer"):
        resp = member(p.inst.admin, p.inst.org_id, role).post(_path(p, approval, "approve"), json={})
        assert resp.status == 403, (role, resp)
    other_admin, _ = make_org()
    resp = other_admin.post(_path(p, approval, "approve"), json={})
    assert resp.status == 404, resp
    assert other_admin.get(_path(p, approval)).status == 404
    # The starter (here an admin who started the run) may not decide by default.
    p2 = park(container, make_org, anon, settings, member, inst=p.inst, starter=p.inst.admin)
    resp = p.inst.admin.post(_path(p2, p2.approvals[0], "approve"), json={})
    assert resp.status == 403 and resp.body["error"]["code"] == "starter_may_not_decide"
    assert p.inst.admin.get(_path(p, approval)).body["status"] == "pending"
    # ... unless the org's policy says so.
    assert p.inst.admin.put(f"/orgs/{p.inst.org_id}/approval-policy", json={"starter_may_approve": True}).status == 200
    p3 = park(container, make_org, anon, settings, member, inst=p.inst, starter=p.inst.admin)
    resp = p.inst.admin.post(_path(p3, p3.approvals[0], "approve"), json={})
    assert resp.status == 200 and resp.body["status"] == "approved"


def test_distinct_approvers_count(container, make_org, anon, settings, member):
    inst = install_builtin(container, make_org, anon, settings)
    resp = inst.admin.put(f"/orgs/{inst.org_id}/approval-policy", json={"required_approvals": 2})
    assert resp.status == 200 and resp.body["required_approvals"] == 2
    bad = inst.admin.put(f"/orgs/{inst.org_id}/approval-policy", json={"required_approvals": 0})
    assert bad.status == 422
    p = park(container, make_org, anon, settings, member, inst=inst)
    [approval] = p.approvals
    first, second = member(inst.admin, inst.org_id, "approver"), member(inst.admin, inst.org_id, "approver")
    resp = first.post(_path(p, approval, "approve"), json={})
    assert resp.status == 200 and resp.body["status"] == "pending"
    again = first.post(_path(p, approval, "approve"), json={})
    assert again.status == 409 and again.body["error"]["code"] == "already_voted"
    assert _run(p)["status"] == "awaiting_approval"
    resp = second.post(_path(p, approval, "approve"), json={})
    assert resp.status == 200 and resp.body["status"] == "approved" and len(resp.body["votes"]) == 2
    assert _run(p)["status"] == "queued"


def test_expiry_with_an_injected_clock_resumes_the_run(container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member, actions=2)
    assert len(p.approvals) == 2
    later = datetime.now(UTC) + timedelta(hours=72, minutes=1)
    service = ApprovalService(container.db, container.audit, container.orgs, container.runs, clock=lambda: later)
    soon = ApprovalService(container.db, container.audit, container.orgs, container.runs,
                           clock=lambda: datetime.now(UTC) + timedelta(hours=61))
    for clocked in (service, soon):  # as the root wires it: reminders and expiries are notified
        clocked.use_notifier(container.notifications)
    reminded = soon.remind_due(limit=10_000)
    assert {a["id"] for a in p.approvals} <= set(reminded)
    assert not {a["id"] for a in p.approvals} & set(soon.remind_due(limit=10_000))  # once
    expired = service.expire_due(limit=10_000)
    assert {a["id"] for a in p.approvals} <= set(expired)
    for approval in p.approvals:
        body = p.inst.admin.get(_path(p, approval)).body
        assert body["status"] == "expired" and body["decided_by"] == "system:approval-expiry"
    assert _run(p)["status"] == "queued"  # both expired: the run resumes on its not-approved path
    assert claim(anon, p.inst.key) is not None and claim(anon, p.inst.key, wait=0) is None
    assert "approval.expired" in _audit_actions(p) and "approval.reminded" in _audit_actions(p)
    notes = p.inst.admin.get("/me/notifications?limit=100").body["items"]
    for event, subject in (("approval.reminder", "Reminder: approval needed for"), ("approval.expired",
                                                                                   "Approval expired:")):
        mine = {n["data"]["approval_id"]: n for n in notes if n["event"] == event}
        assert set(mine) == {a["id"] for a in p.approvals}, event
        assert all(n["subject"].startswith(subject) and n["data"]["run_id"] == p.run["id"] and
                   n["data"]["org_id"] == p.inst.org_id for n in mine.values())


def test_cancelling_a_waiting_run_cancels_its_approvals(container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member)
    resp = p.inst.admin.post(f"/agents/{p.inst.agent_id}/runs/{p.run['id']}/cancel")
    assert resp.status == 200 and resp.body["status"] == "cancelled"
    assert p.inst.admin.get(_path(p, p.approvals[0])).body["status"] == "cancelled"


def test_uninstalling_cancels_a_waiting_run_and_its_approvals(container, make_org, anon, settings, member):
    p = park(container, make_org, anon, settings, member)
    assert p.inst.admin.delete(f"/orgs/{p.inst.org_id}/deployments/{p.inst.deployment_id}").status in (200, 202, 204)
    container.runs.reconcile()
    assert _run(p)["status"] == "cancelled"
    assert p.inst.admin.get(_path(p, p.approvals[0])).body["status"] == "cancelled"


def test_a_platform_tools_outcome_is_not_the_data_planes_to_record(container, make_org, anon, settings, member):
    inst = install_builtin(container, make_org, anon, settings)
    run = member(inst.admin, inst.org_id, "operator").post(
        f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id}).body
    task = claim(anon, inst.key)
    action = {**proposed(run, "int-0", arguments={"resource_id": "i-nowhere"}), "tool": "cloud.stop_instance"}
    from shared.approvals import action_hash, canonical_action
    action["action_hash"] = action_hash(canonical_action(
        agent_id=run["agent_id"], version=run["version"], package_digest=action["package_digest"],
        tool="cloud.stop_instance", arguments=action["arguments"], run_id=run["id"], interrupt_id="int-0"))
    parked = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/await-approval", token=inst.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"], "actions": [action]})
    assert parked.status == 200, parked
    [approval] = parked.body["approvals"]
    assert inst.admin.post(f"/orgs/{inst.org_id}/approvals/{approval['id']}/approve", json={}).status == 200
    resumed = claim(anon, inst.key)
    base = f"/tasks/{resumed['task_id']}/approvals/{approval['id']}"
    faked = anon.post(f"{base}/outcome", token=inst.key, json={"lease_token": resumed["lease_token"],
                                                              "outcome": {"state": "stopped"}})
    assert faked.status == 409
    # The control plane applies it itself: a resource missing from the inventory is a failed outcome.
    applied = anon.post(f"{base}/execution", token=inst.key, json={"lease_token": resumed["lease_token"],
                                                                  "action_hash": approval["action_hash"]})
    assert applied.status == 200 and applied.body["execute"] is False
    assert applied.body["execution"]["outcome"]["applied"] is False


def _focus(*resource_ids: str) -> str:
    rows = "".join(f"{r},1.50,2024-09-01T00:00:00Z,vm {r}\n" for r in resource_ids)
    return "ResourceId,BilledCost,ChargePeriodStart,ResourceName\n" + rows


def test_the_inventory_pages_by_resource_id_with_opaque_cursors(make_org, member):
    admin, org_id = make_org()
    url = f"/orgs/{org_id}/cloud-resources"
    ids = ["i-a", "i-b", "i-c", "i-d", "i-e", "vm-" + "é" * 496]  # 3 + 3 in pages of 3; the longest id there is
    seeded = admin.post(f"{url}/import", json={"focus_csv": _focus(*reversed(ids))})
    assert seeded.status == 200, seeded
    assert [r["resource_id"] for r in seeded.body["items"]] == ids and seeded.body["next_cursor"] is None
    viewer = member(admin, org_id, "viewer")
    seen, cursor, pages = [], None, 0
    while True:
        page = viewer.get(url, query_string={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert page.status == 200, page
        seen += [r["resource_id"] for r in page.body["items"]]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
        assert cursor not in ids and not cursor.startswith("i-")  # opaque, not a raw id
    assert seen == ids and pages == 2  # each once; the full last page announced no empty third one
    # N + 1 in pages of N: the second page holds the last one alone.
    first = admin.get(url, query_string={"limit": 5}).body
    assert [r["resource_id"] for r in first["items"]] == ids[:5] and first["next_cursor"]
    rest = admin.get(url, query_string={"limit": 5, "cursor": first["next_cursor"]}).body
    assert [r["resource_id"] for r in rest["items"]] == ids[5:] and rest["next_cursor"] is None


@pytest.mark.parametrize("query", [
    {"cursor": "garbage!"}, {"cursor": "i-b"},  # a raw id, as the inventory once handed out
    {"cursor": base64.urlsafe_b64encode(json.dumps({"key": 7}).encode()).decode()},
    {"cursor": base64.urlsafe_b64encode(json.dumps({"key": "i-\u0000"}).encode()).decode()},
    {"cursor": base64.urlsafe_b64encode(json.dumps({"created_at": "x", "id": "i-a"}).encode()).decode()},
])
def test_a_tampered_inventory_cursor_is_400_and_changes_nothing(make_org, query):
    admin, org_id = make_org()
    url = f"/orgs/{org_id}/cloud-resources"
    assert admin.post(f"{url}/import", json={"focus_csv": _focus("i-a", "i-b", "i-c")}).status == 200
    before = admin.get(url).body
    audit_before = admin.get(f"/orgs/{org_id}/audit?limit=200").body["items"]
    resp = admin.get(url, query_string={"limit": 1, **query})
    assert resp.status == 400 and resp.body["error"]["code"] == "invalid_cursor", resp
    assert admin.get(url).body == before and admin.get(f"/orgs/{org_id}/audit?limit=200").body["items"] == audit_before
