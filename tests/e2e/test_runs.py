"""Runs through the API: the life cycle with the data plane played by hand, delivery semantics
(leases, redelivery, retries, dead runs), cancel in every state, roles, validation, logs."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from runs_support import claim, install_builtin, metrics, start_run
from support.wait import wait_until

from shared.composition import build_container
from shared.runs.models import CompleteIn, RunMetricsIn
from shared.runs.service import RunService


@pytest.fixture
def inst(container, make_org, anon, settings):
    return install_builtin(container, make_org, anon, settings)


def _run_url(inst, run_id):
    return f"/agents/{inst.agent_id}/runs/{run_id}"


def _log(seq, message, step="fetch_billing_data", **fields):
    return {"seq": seq, "ts": datetime.now(UTC).isoformat(), "level": "info", "step": step, "message": message,
            "fields": fields}


def _complete(anon, inst, task, status="succeeded", **extra):
    body = {"task_id": task["task_id"], "lease_token": task["lease_token"], "status": status,
            "metrics": extra.pop("metrics", metrics(10, 0.5)), **extra}
    return anon.post(f"/agents/{inst.agent_id}/runs/{task['run_id']}/complete", token=inst.key, json=body)


def test_run_life_cycle(inst, anon, container):
    run = start_run(inst.admin, inst, {"lookback_days": 7})
    assert run["status"] == "queued" and run["run_id"] == run["id"] and run["attempt"] == 0
    assert run["inputs"] == {"lookback_days": 7} and run["version"] == "1.1.0"
    task = claim(anon, inst.key)
    assert task["run_id"] == run["id"] and task["attempt"] == 1 and task["next_log_seq"] == 1
    assert task["inputs"] == {"lookback_days": 7} and task["config"]["billing_source"].endswith("focus_sample.csv")
    assert task["granted_permissions"] == ["billing:read", "compute:write"]
    assert task["manifest"]["name"] == "cost-anomaly-detector" and task["cancel_requested"] is False
    got = inst.admin.get(_run_url(inst, run["id"])).body
    assert got["status"] == "running" and got["started_at"] and got["attempt"] == 1
    beat = anon.post(f"/tasks/{task['task_id']}/heartbeat", token=inst.key,
                     json={"lease_token": task["lease_token"], "lease_seconds": 30})
    assert beat.status == 200 and beat.body["cancel_requested"] is False
    logs_url = f"/agents/{inst.agent_id}/runs/{run['id']}/logs"
    batch = {"lease_token": task["lease_token"],
             "lines": [_log(1, "Fetching billing data"), _log(2, "Fetched 10 records", records=10),
                       _log(3, "token mk.abc.0123456789abcdef0123 leaked", api_key="x")]}
    assert anon.post(logs_url, token=inst.key, json=batch).body == {"accepted": 3, "duplicates": 0}
    # A retried batch stores nothing twice.
    assert anon.post(logs_url, token=inst.key, json=batch).body == {"accepted": 0, "duplicates": 3}
    done = _complete(anon, inst, task, outputs={"anomalies": [1]}, metrics=metrics(10, 0.25))
    assert done.status == 200, done
    assert done.body == {"run_id": run["id"], "status": "succeeded", "attempt": 1, "retry_scheduled": False}
    again = _complete(anon, inst, task, outputs={"anomalies": [1, 2]}, metrics=metrics(99, 9))
    assert again.status == 200 and again.body == done.body and again.headers["Idempotent-Replayed"] == "true"
    final = inst.admin.get(_run_url(inst, run["id"])).body
    assert final["status"] == "succeeded" and final["outputs"] == {"anomalies": [1]} and final["finished_at"]
    assert final["metrics"] == {"records_processed": 10, "cpu_seconds": 0.25, "attempts": 1}
    lines = inst.admin.get(logs_url).body
    assert [line["seq"] for line in lines["items"]] == [1, 2, 3] and lines["next_after_seq"] is None
    assert lines["items"][1]["fields"] == {"records": 10} and lines["items"][1]["attempt"] == 1
    assert "mk.abc" not in lines["items"][2]["message"] and lines["items"][2]["fields"]["api_key"] == "[REDACTED]"
    page = inst.admin.get(f"{logs_url}?after_seq=1&limit=1").body
    assert [line["seq"] for line in page["items"]] == [2] and page["next_after_seq"] == 2
    # A full last page announces no next page (the cursor stays the sequence number clients follow by).
    for query, seqs in (("limit=3", [1, 2, 3]), ("after_seq=1&limit=2", [2, 3]), ("after_seq=2&limit=1", [3])):
        page = inst.admin.get(f"{logs_url}?{query}").body
        assert [line["seq"] for line in page["items"]] == seqs and page["next_after_seq"] is None, query
    seen, after = [], 0
    while True:  # three lines in pages of two, as `marketplace logs` reads them: each once, no empty page
        page = inst.admin.get(f"{logs_url}?after_seq={after}&limit=2").body
        assert page["items"]
        seen += [line["seq"] for line in page["items"]]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert seen == [1, 2, 3]
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert actions.count("run.created") == 1 and actions.count("run.succeeded") == 1
    info = container.queue.get(task["task_id"])
    assert info.state == "done"


def test_sse_stream_replays_logs_and_ends_with_the_status(inst, anon):
    run = start_run(inst.admin, inst)
    task = claim(anon, inst.key)
    anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/logs", token=inst.key, json={
        "lease_token": task["lease_token"], "lines": [_log(i, f"line {i}") for i in range(1, 6)]})
    _complete(anon, inst, task)
    resp = inst.admin.get(f"/agents/{inst.agent_id}/runs/{run['id']}/logs",
                          headers={"Accept": "text/event-stream", "Last-Event-ID": "2"})
    assert resp.status == 200 and resp.headers["Content-Type"].split(";")[0] == "text/event-stream"
    text = resp.data.decode()
    assert [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")] == [3, 4, 5]
    assert text.rstrip().endswith('"status":"succeeded","last_seq":5}')
    assert "event: end" in text


def test_listing_runs_filters_and_pages(inst, anon, make_org, container, settings):
    other = install_builtin(container, make_org, anon, settings, org=(inst.admin, inst.org_id))
    ids = [start_run(inst.admin, inst)["id"] for _ in range(3)] + [start_run(inst.admin, other)["id"]]
    task = claim(anon, inst.key)
    _complete(anon, inst, task)
    seen, cursor = [], None
    while True:
        page = inst.admin.get(f"/orgs/{inst.org_id}/runs?limit=2" + (f"&cursor={cursor}" if cursor else "")).body
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    mine = inst.admin.get(f"/orgs/{inst.org_id}/runs?deployment_id={other.deployment_id}").body["items"]
    assert [r["id"] for r in mine] == [ids[3]]
    succeeded = inst.admin.get(f"/orgs/{inst.org_id}/runs?status=succeeded").body["items"]
    assert [r["id"] for r in succeeded] == [task["run_id"]]
    by_agent = inst.admin.get(f"/orgs/{inst.org_id}/runs?agent_id=cost-anomaly-detector").body["items"]
    assert len(by_agent) == 4 and "outputs" not in by_agent[0]
    assert inst.admin.get(f"/orgs/{inst.org_id}/runs?status=bogus").status == 422


def test_roles_and_membership(inst, member, make_user):
    for role in ("viewer", "approver", "developer"):
        user = member(inst.admin, inst.org_id, role)
        refused = user.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id})
        assert refused.status == 403, (role, refused)
    operator = member(inst.admin, inst.org_id, "operator")
    run = start_run(operator, inst)
    viewer = member(inst.admin, inst.org_id, "viewer")
    assert viewer.get(_run_url(inst, run["id"])).status == 200
    assert viewer.get(f"/orgs/{inst.org_id}/runs").status == 200
    assert viewer.post(f"{_run_url(inst, run['id'])}/cancel").status == 403
    outsider = make_user()
    assert outsider.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id}).status == 404
    assert outsider.get(_run_url(inst, run["id"])).status == 404
    assert outsider.get(f"{_run_url(inst, run['id'])}/logs").status == 404
    assert outsider.post(f"{_run_url(inst, run['id'])}/cancel").status == 404
    assert outsider.get(f"/orgs/{inst.org_id}/runs").status == 404
    assert inst.admin.post("/agents/cost-anomaly-detector/runs", json={"deployment_id": "dep_nope"}).status == 404
    assert inst.admin.get(f"/agents/agt_other/runs/{run['id']}").status == 404
    # A data-plane key reaches no user operation, and users reach no data-plane operation.
    assert inst.admin.get("/tasks/next").status == 403


def test_api_keys_start_runs_by_role_and_agents_are_named_by_id_or_name(inst, anon, make_org):
    def key(admin, org_id, role):
        return admin.post(f"/orgs/{org_id}/api-keys", json={"name": role, "role": role}).body["key"]

    body = {"deployment_id": inst.deployment_id}
    by_name = anon.post("/agents/cost-anomaly-detector/runs", token=key(inst.admin, inst.org_id, "operator"), json=body)
    assert by_name.status == 201 and by_name.body["agent_id"] == inst.agent_id
    assert anon.get(f"/agents/cost-anomaly-detector/runs/{by_name.body['id']}",
                    token=key(inst.admin, inst.org_id, "viewer")).body["id"] == by_name.body["id"]
    assert anon.post(f"/agents/{inst.agent_id}/runs", token=key(inst.admin, inst.org_id, "viewer"),
                     json=body).status == 403
    other_admin, other_org = make_org()
    assert anon.post(f"/agents/{inst.agent_id}/runs", token=key(other_admin, other_org, "admin"),
                     json=body).status == 404
    assert inst.admin.post("/agents/no-such-agent/runs", json=body).status == 404
    assert inst.admin.get(f"/orgs/{inst.org_id}/runs?agent_id=no-such-agent").body == {"items": [],
                                                                                       "next_cursor": None}


@pytest.mark.parametrize(("inputs", "path"), [
    ({"lookback_days": "thirty"}, "inputs.lookback_days"),
    ({"lookback_days": 0}, "inputs.lookback_days"),
    ({"currency": "usd"}, "inputs.currency"),
    ({"surprise": True}, "inputs"),
])
def test_inputs_are_validated_against_the_manifest(inst, container, inputs, path):
    with container.db.read() as tx:
        before = tx.fetch_val("SELECT count(*) FROM runs WHERE deployment_id = %s", inst.deployment_id)
    resp = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                   "inputs": inputs})
    assert resp.status == 422, resp
    assert path in [d["path"] for d in resp.body["error"]["details"]]
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM runs WHERE deployment_id = %s", inst.deployment_id) == before


def test_deployment_must_be_ready(container, make_org, anon, settings):
    pending = install_builtin(container, make_org, anon, settings, register=False)
    resp = pending.admin.post(f"/agents/{pending.agent_id}/runs", json={"deployment_id": pending.deployment_id})
    assert resp.status == 409 and resp.body["error"]["code"] == "deployment_not_ready"
    ready = install_builtin(container, make_org, anon, settings)
    container.deployments.mark_unreachable(now=datetime.now(UTC) + timedelta(minutes=10))
    resp = ready.admin.post(f"/agents/{ready.agent_id}/runs", json={"deployment_id": ready.deployment_id})
    assert resp.status == 409
    anon.post("/dataplanes/heartbeat", token=ready.key)
    start_run(ready.admin, ready)
    ready.admin.delete(f"/orgs/{ready.org_id}/deployments/{ready.deployment_id}")
    assert ready.admin.post(f"/agents/{ready.agent_id}/runs", json={"deployment_id": ready.deployment_id}).status == 409


def test_cancel_in_every_state(inst, anon, member):
    operator = member(inst.admin, inst.org_id, "operator")
    # Queued: cancelled at once, and never delivered.
    queued = start_run(operator, inst)
    cancelled = operator.post(f"{_run_url(inst, queued['id'])}/cancel")
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled" and cancelled.body["finished_at"]
    assert claim(anon, inst.key, wait=0) is None
    # Running: flagged, seen at the next heartbeat, reported by the worker.
    running = start_run(operator, inst)
    task = claim(anon, inst.key)
    flagged = operator.post(f"{_run_url(inst, running['id'])}/cancel").body
    assert flagged["status"] == "running" and flagged["cancel_requested"] is True
    assert operator.post(f"{_run_url(inst, running['id'])}/cancel").body["status"] == "running"  # idempotent
    beat = anon.post(f"/tasks/{task['task_id']}/heartbeat", token=inst.key, json={"lease_token": task["lease_token"]})
    assert beat.body["cancel_requested"] is True
    done = _complete(anon, inst, task, status="cancelled", error="cancelled between steps")
    assert done.body["status"] == "cancelled"
    assert operator.get(_run_url(inst, running["id"])).body["status"] == "cancelled"
    # A worker that fails while a cancel is pending ends the run cancelled too, not failed.
    # Finished: a no-op.
    finished = start_run(operator, inst)
    _complete(anon, inst, claim(anon, inst.key))
    again = operator.post(f"{_run_url(inst, finished['id'])}/cancel")
    assert again.status == 200 and again.body["status"] == "succeeded"
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert actions.count("run.cancelled") == 2 and actions.count("run.cancel_requested") == 1


def test_cancel_of_a_running_run_whose_worker_is_gone(inst, anon):
    run = start_run(inst.admin, inst)
    task = claim(anon, inst.key, lease=2)
    time.sleep(2.3)  # the worker died: its lease ran out
    resp = inst.admin.post(f"{_run_url(inst, run['id'])}/cancel")
    assert resp.body["status"] == "cancelled"
    assert _complete(anon, inst, task).status == 409
    assert claim(anon, inst.key, wait=0) is None


def test_expired_lease_is_delivered_again_and_only_its_holder_completes(inst, anon, container):
    run = start_run(inst.admin, inst)
    first = claim(anon, inst.key, lease=2)
    time.sleep(2.3)
    second = claim(anon, inst.key, lease=30)
    assert second["run_id"] == run["id"] and second["attempt"] == 2 and second["task_id"] == first["task_id"]
    stale = anon.post(f"/tasks/{first['task_id']}/heartbeat", token=inst.key, json={"lease_token": first["lease_token"]})
    assert stale.status == 409 and stale.body["error"]["code"] == "lease_lost"
    logs = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/logs", token=inst.key,
                     json={"lease_token": first["lease_token"], "lines": [_log(1, "zombie")]})
    assert logs.status == 409
    assert _complete(anon, inst, first).status == 409
    assert _complete(anon, inst, second, metrics=metrics(5, 1)).status == 200
    assert _complete(anon, inst, first).status == 409
    final = inst.admin.get(_run_url(inst, run["id"])).body
    assert final["status"] == "succeeded" and final["attempt"] == 2
    assert final["metrics"] == {"records_processed": 5, "cpu_seconds": 1.0, "attempts": 2}
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert actions.count("run.succeeded") == 1


def test_retryable_failures_retry_then_the_run_is_dead(inst, anon):
    run = start_run(inst.admin, inst)
    errors = []
    for attempt in (1, 2, 3):
        task = claim(anon, inst.key, wait=15)
        assert task is not None and task["attempt"] == attempt
        resp = _complete(anon, inst, task, status="failed", error=f"connection refused ({attempt})", retryable=True)
        errors.append(resp.body)
        assert _complete(anon, inst, task, status="failed", error="again", retryable=True).body == resp.body
        if attempt < 3:
            assert resp.body["status"] == "queued" and resp.body["retry_scheduled"] is True
            between = inst.admin.get(_run_url(inst, run["id"])).body
            assert between["status"] == "queued" and between["error"] == f"connection refused ({attempt})"
    assert errors[-1] == {"run_id": run["id"], "status": "dead", "attempt": 3, "retry_scheduled": False}
    final = inst.admin.get(_run_url(inst, run["id"])).body
    assert final["status"] == "dead" and final["error"] == "gave up after 3 attempts: connection refused (3)"
    assert claim(anon, inst.key, wait=0) is None


def test_a_non_retryable_failure_fails_at_once(inst, anon):
    run = start_run(inst.admin, inst)
    task = claim(anon, inst.key)
    resp = _complete(anon, inst, task, status="failed", error="ToolPermissionDenied: billing.read_focus")
    assert resp.body["status"] == "failed"
    final = inst.admin.get(_run_url(inst, run["id"])).body
    assert final["status"] == "failed" and final["error"].startswith("ToolPermissionDenied")
    assert claim(anon, inst.key, wait=0) is None


def test_long_poll_waits_and_wakes(inst, anon):
    started = time.monotonic()
    assert claim(anon, inst.key, wait=1) is None
    assert time.monotonic() - started >= 0.9
    assert anon.get("/tasks/next?wait=31", token=inst.key).status == 422


def test_data_planes_see_only_their_own_runs(inst, anon, container, make_org, settings):
    other = install_builtin(container, make_org, anon, settings)
    run = start_run(inst.admin, inst)
    assert claim(anon, other.key, wait=0) is None
    task = claim(anon, inst.key)
    assert anon.post(f"/tasks/{task['task_id']}/heartbeat", token=other.key,
                     json={"lease_token": task["lease_token"]}).status == 404
    assert anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/complete", token=other.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"], "status": "succeeded",
        "metrics": metrics()}).status == 404
    assert anon.get(f"/tasks/{task['task_id']}/checkpoints", token=other.key,
                    headers={"X-Lease-Token": task["lease_token"]}).status == 404


def test_checkpoints_are_stored_for_the_lease_holder(inst, anon):
    run = start_run(inst.admin, inst)
    task = claim(anon, inst.key, lease=2)
    url = f"/tasks/{task['task_id']}/checkpoints"
    lease = {"X-Lease-Token": task["lease_token"]}

    def blob(data: bytes) -> dict[str, str]:
        return {"type": "msgpack", "data": base64.b64encode(data).decode()}

    assert anon.put(f"{url}/c1", token=inst.key, headers=lease, json={
        "checkpoint": blob(b"one"), "metadata": blob(b"m1"), "progress": {"records_processed": 3}}).status == 204
    assert anon.put(f"{url}/c2", token=inst.key, headers=lease, json={
        "parent_checkpoint_id": "c1", "checkpoint": blob(b"two"), "metadata": blob(b"m2")}).status == 204
    writes = {"task_id": "t1", "task_path": "~normalize", "writes": [
        {"idx": 0, "channel": "daily", "value": blob(b"w0")}, {"idx": -1, "channel": "__error__", "value": blob(b"e")}]}
    assert anon.put(f"{url}/c2/writes", token=inst.key, headers=lease, json=writes).status == 204
    writes["writes"][0]["value"] = blob(b"changed")
    writes["writes"][1]["value"] = blob(b"replaced")
    assert anon.put(f"{url}/c2/writes", token=inst.key, headers=lease, json=writes).status == 204
    listed = anon.get(url, token=inst.key, headers=lease).body["items"]
    assert [c["checkpoint_id"] for c in listed] == ["c2", "c1"] and listed[1]["progress"] == {"records_processed": 3}
    assert base64.b64decode(listed[0]["checkpoint"]["data"]) == b"two" and listed[0]["parent_checkpoint_id"] == "c1"
    assert {w["idx"]: base64.b64decode(w["value"]["data"]) for w in listed[0]["writes"]} == {
        0: b"w0", -1: b"replaced"}
    assert [c["checkpoint_id"] for c in anon.get(f"{url}?before=c2", token=inst.key, headers=lease).body["items"]] == [
        "c1"]
    assert anon.get(url, token=inst.key).status == 400
    assert anon.put(f"{url}/c3", token=inst.key, headers=lease, json={
        "checkpoint": {"type": "x", "data": "%%%"}, "metadata": blob(b"")}).status == 422
    # The next delivery reads them; the lost lease can no longer write.
    time.sleep(2.3)
    second = claim(anon, inst.key)
    assert anon.put(f"{url}/c3", token=inst.key, headers=lease, json={
        "checkpoint": blob(b"late"), "metadata": blob(b"")}).status == 409
    assert len(anon.get(url, token=inst.key, headers={"X-Lease-Token": second["lease_token"]}).body["items"]) == 2
    _complete(anon, inst, second)
    # A finished run keeps no checkpoints.
    assert anon.get(url, token=inst.key, headers={"X-Lease-Token": second["lease_token"]}).status == 409
    assert inst.admin.get(_run_url(inst, run["id"])).body["status"] == "succeeded"


def test_reconcile_closes_a_run_whose_last_lease_expired(inst, anon, container):
    service = RunService(container.db, container.audit, container.orgs, container.queue, catalog=container.catalog,
                         deployments=container.deployments, max_attempts=1)
    principal = container.identity.authenticate(inst.admin.token)
    run = service.create(principal, inst.agent_id, inst.deployment_id, {})
    dataplane = container.identity.authenticate(inst.key)
    leased = service.claim(dataplane, worker="w1", wait_seconds=5, lease_seconds=2)
    assert leased is not None and leased.run_id == run.id
    time.sleep(2.3)
    # The expired lease was the last attempt: the queue closes the task instead of delivering it.
    assert service.claim(dataplane, worker="w2", wait_seconds=0, lease_seconds=2) is None
    assert run.id in service.reconcile(idle_for=timedelta(0))
    final = inst.admin.get(_run_url(inst, run.id)).body
    assert final["status"] == "dead" and "lease expired" in final["error"]
    late = CompleteIn(task_id=leased.task_id, lease_token=leased.lease_token, status="succeeded",
                      metrics=RunMetricsIn(records_processed=1, cpu_seconds=0))
    with pytest.raises(Exception, match="already dead"):
        service.complete(dataplane, inst.agent_id, run.id, late)
    assert service.reconcile(idle_for=timedelta(0)) == []


def test_events_are_emitted_once_in_the_completing_transaction(inst, anon, container):
    seen = []

    def events(tx, event):
        seen.append((event.org_id, event.type, event.run_id, event.status))

    service = RunService(container.db, container.audit, container.orgs, container.queue, catalog=container.catalog,
                         deployments=container.deployments, events=events)
    principal = container.identity.authenticate(inst.admin.token)
    dataplane = container.identity.authenticate(inst.key)
    ok = service.create(principal, inst.agent_id, inst.deployment_id, {})
    leased = service.claim(dataplane, worker="w", wait_seconds=5, lease_seconds=30)
    report = CompleteIn(task_id=leased.task_id, lease_token=leased.lease_token, status="succeeded",
                        metrics=RunMetricsIn(records_processed=1, cpu_seconds=0.1))
    service.complete(dataplane, inst.agent_id, ok.id, report)
    service.complete(dataplane, inst.agent_id, ok.id, report)
    bad = service.create(principal, inst.agent_id, inst.deployment_id, {})
    leased = service.claim(dataplane, worker="w", wait_seconds=5, lease_seconds=30)
    service.complete(dataplane, inst.agent_id, bad.id, CompleteIn(
        task_id=leased.task_id, lease_token=leased.lease_token, status="failed", error="boom",
        metrics=RunMetricsIn(records_processed=0, cpu_seconds=0)))
    assert seen == [(inst.org_id, "run.completed", ok.id, "succeeded"),
                    (inst.org_id, "run.failed", bad.id, "failed")]
    wait_until(lambda: container.queue.get(leased.task_id).state == "dead", what="the failed task to close")


def test_outcomes_reach_the_orgs_webhooks_once(inst, anon, container, settings):
    # A second container allows a loopback receiver URL (as marketplace up does), same database.
    loop = build_container(settings.model_copy(update={"webhooks_allow_loopback": True}), migrate=False)
    try:
        admin = container.identity.authenticate(inst.admin.token)
        loop.webhooks.create(admin, inst.org_id, url="http://127.0.0.1:9/hooks",
                             events=["run.completed", "run.failed", "run.cancelled"])
    finally:
        loop.close()
    ok = start_run(inst.admin, inst)
    task = claim(anon, inst.key)
    _complete(anon, inst, task)
    _complete(anon, inst, task)  # a retried completion announces nothing twice
    bad = start_run(inst.admin, inst)
    _complete(anon, inst, claim(anon, inst.key), status="failed", error="boom")
    gone = start_run(inst.admin, inst)
    inst.admin.post(f"{_run_url(inst, gone['id'])}/cancel")
    with container.db.read() as tx:
        events = tx.fetch_all("SELECT type, data FROM webhook_events WHERE org_id = %s ORDER BY occurred_at",
                              inst.org_id)
    assert [(e["type"], e["data"]["run_id"]) for e in events] == [
        ("run.completed", ok["id"]), ("run.failed", bad["id"]), ("run.cancelled", gone["id"])]
    assert events[0]["data"]["metrics"]["records_processed"] == 10 and events[1]["data"]["error"] == "boom"


def test_runs_of_an_uninstalled_deployment_are_cancelled(inst, anon, container):
    queued = start_run(inst.admin, inst)
    running = start_run(inst.admin, inst)
    task = claim(anon, inst.key)
    assert task["run_id"] == queued["id"]
    assert inst.admin.delete(f"/orgs/{inst.org_id}/deployments/{inst.deployment_id}").status == 200
    closed = container.runs.reconcile()
    assert {queued["id"], running["id"]} <= set(closed)
    for run in (queued, running):
        final = inst.admin.get(_run_url(inst, run["id"])).body
        assert final["status"] == "cancelled" and final["error"] == "the deployment was uninstalled"
    assert container.queue.get(_task_id(container, running["id"])).state == "cancelled"
    assert queued["id"] not in container.runs.reconcile()


def _task_id(container, run_id):
    with container.db.read() as tx:
        return tx.fetch_val("SELECT task_id FROM runs WHERE id = %s", run_id)
