"""Spend limits through the API: budgets that hold under concurrency, per-run caps that stop a run,
the kill switch, budget alerts, and the usage API."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from conftest import Client
from runs_support import claim, install_builtin, metrics, start_run

from runtime.client import DataPlaneClient
from runtime.usage import UsageHeartbeat, publish, withdraw
from shared.billing import Outcome
from shared.kernel.money import PricingSpec


@pytest.fixture
def inst(container, make_org, anon, settings):
    return install_builtin(container, make_org, anon, settings)


def _complete(anon, inst, task, status="succeeded", **extra):
    body = {"task_id": task["task_id"], "lease_token": task["lease_token"], "status": status,
            "metrics": extra.pop("metrics", metrics(10, 0.5)), **extra}
    return anon.post(f"/agents/{inst.agent_id}/runs/{task['run_id']}/complete", token=inst.key, json=body)


def _limits(inst, **body):
    resp = inst.admin.put(f"/orgs/{inst.org_id}/billing/limits", json=body)
    assert resp.status == 200, resp
    return resp.body


def test_twenty_concurrent_runs_never_pass_a_ten_dollar_budget(inst, anon, app):
    _limits(inst, monthly_budget_usd="10", default_run_cap_usd="1")
    token = inst.admin.token

    def create(_: int):
        client = Client(app, token)  # a client per thread: the test client is not shared across threads
        return client.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                    "inputs": {}})

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(create, range(20)))
    admitted = [a for a in answers if a.status == 201]
    refused = [a for a in answers if a.status != 201]
    assert len(admitted) == 10
    assert {a.status for a in refused} == {409}
    assert {a.body["error"]["code"] for a in refused} == {"budget_exceeded"}
    # Each admitted run then uses far more than its cap (16.50 USD at list price).
    for _ in admitted:
        task = claim(anon, inst.key)
        assert _complete(anon, inst, task, metrics=metrics(15_000, 7200)).status == 200
    usage = inst.admin.get(f"/orgs/{inst.org_id}/usage").body
    assert usage["total_micros"] <= 10_000_000 and usage["runs"] == 10
    assert all(item["capped"] and item["charge_usd"] == "1.00" for item in usage["items"])
    limits = inst.admin.get(f"/orgs/{inst.org_id}/billing/limits").body
    assert limits["charged_this_month_usd"] == "10.00" and limits["reserved_usd"] == "0.00"
    # The budget is spent: the next run is refused, whatever its cap.
    resp = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                  "max_charge_usd": "0.01"})
    assert resp.status == 409 and resp.body["error"]["code"] == "budget_exceeded"


def test_alerts_at_fifty_eighty_and_a_hundred_percent(inst, anon):
    _limits(inst, monthly_budget_usd="10")
    for cap in ("5", "3", "2"):
        run = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                     "max_charge_usd": cap})
        assert run.status == 201, run
    entries = inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]
    alerts = sorted(e["details"]["percent"] for e in entries if e["action"] == "billing.budget_threshold")
    assert alerts == [50, 80, 100]


def test_budget_alerts_notify_the_org_admins_once_per_threshold(inst, member):
    other_admin = member(inst.admin, inst.org_id, "admin")
    approver = member(inst.admin, inst.org_id, "approver")
    _limits(inst, monthly_budget_usd="10")
    for cap in ("2", "3", "1", "0.5"):  # 20 %, 50 %, 60 %, 65 %: only 50 % is crossed
        run = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                     "max_charge_usd": cap})
        assert run.status == 201, run
    run = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                 "max_charge_usd": "3.5"})  # 100 %
    assert run.status == 201, run
    for admin in (inst.admin, other_admin):
        notes = [n for n in admin.get("/me/notifications").body["items"] if n["event"] == "billing.budget_threshold"]
        assert sorted(n["data"]["percent"] for n in notes) == [50, 100], notes
        assert any("100 % of this month's budget" in n["subject"] for n in notes)
        assert {n["data"]["org_id"] for n in notes} == {inst.org_id}
    # Approvers hear about approvals, not about money.
    assert [n for n in approver.get("/me/notifications").body["items"]
            if n["event"] == "billing.budget_threshold"] == []


def test_a_run_at_its_cap_is_told_to_stop_and_its_cancel_is_requested(inst, anon):
    run = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                 "max_charge_usd": "1"}).body
    task = claim(anon, inst.key)
    url = f"/agents/{inst.agent_id}/runs/{run['id']}/usage"
    under = anon.post(url, token=inst.key, json={"lease_token": task["lease_token"], "records_processed": 400,
                                                 "cpu_seconds": 1})
    assert under.status == 200 and under.body["stop"] is False and under.body["cap_usd"] == "1.00"
    over = anon.post(url, token=inst.key, json={"lease_token": task["lease_token"], "records_processed": 600,
                                                "cpu_seconds": 1})
    assert over.status == 200 and over.body["stop"] is True
    beat = anon.post(f"/tasks/{task['task_id']}/heartbeat", token=inst.key, json={"lease_token": task["lease_token"]})
    assert beat.body["cancel_requested"] is True
    done = _complete(anon, inst, task, status="cancelled", metrics=metrics(700, 1))
    assert done.body["status"] == "cancelled"
    usage = inst.admin.get(f"/orgs/{inst.org_id}/usage").body
    # 700 records at 0.001 and one CPU-second at 0.50 an hour (138 micro-dollars); no base fee
    assert usage["items"][0]["charge_usd"] == "0.700138" and usage["items"][0]["outcome"] == "cancelled"
    # A wrong lease, a bad body, another deployment's key: refused, nothing changes.
    assert anon.post(url, token=inst.key, json={"lease_token": "nope", "records_processed": 1,
                                                "cpu_seconds": 0}).status == 409
    assert anon.post(url, token=inst.key, json={"lease_token": "x", "records_processed": -1,
                                                "cpu_seconds": 0}).status == 422


def test_the_runners_usage_heartbeat_stops_a_run_within_five_seconds(inst, anon, live_url):
    run = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                 "max_charge_usd": "1"}).body
    task = claim(anon, inst.key)
    counters = {"records_processed": 0.0, "cpu_seconds": 0.0}
    publish(run["id"], lambda: dict(counters))
    stopped = threading.Event()
    client = DataPlaneClient(live_url, inst.key)
    beat = UsageHeartbeat(run["id"], lambda records, cpu: client.report_usage(
        inst.agent_id, run["id"], task["lease_token"], records=records, cpu_seconds=cpu), on_stop=stopped.set,
        interval=0.5)
    beat.start()
    try:
        time.sleep(1.2)
        assert not stopped.is_set()
        counters["records_processed"] = 5_000.0  # 5.50 USD at list price: past the 1 USD cap
        crossed = time.monotonic()
        assert stopped.wait(5), "the run was not stopped within 5 s of crossing its cap"
        assert time.monotonic() - crossed < 5 and beat.stopped_by_cap.is_set()
    finally:
        beat.stop()
        withdraw(run["id"])
        client.close()


def test_the_kill_switch_cancels_running_runs_and_refuses_new_ones(inst, anon, member):
    queued = start_run(inst.admin, inst)
    running = start_run(inst.admin, inst)
    task = claim(anon, inst.key)
    assert task["run_id"] in (queued["id"], running["id"])
    viewer = member(inst.admin, inst.org_id, "viewer")
    assert viewer.post(f"/orgs/{inst.org_id}/billing/freeze", json={}).status == 403
    frozen = inst.admin.post(f"/orgs/{inst.org_id}/billing/freeze", json={"reason": "runaway agent"})
    assert frozen.status == 200 and frozen.body["frozen"] is True
    other = queued["id"] if task["run_id"] == running["id"] else running["id"]
    assert inst.admin.get(f"/agents/{inst.agent_id}/runs/{other}").body["status"] == "cancelled"
    beat = anon.post(f"/tasks/{task['task_id']}/heartbeat", token=inst.key, json={"lease_token": task["lease_token"]})
    assert beat.body["cancel_requested"] is True
    refused = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id})
    assert refused.status == 409 and refused.body["error"]["code"] == "spend_frozen"
    actions = [e["action"] for e in inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]]
    assert "billing.frozen" in actions
    assert inst.admin.post(f"/orgs/{inst.org_id}/billing/unfreeze").body["frozen"] is False
    assert start_run(inst.admin, inst)["status"] == "queued"


def test_usage_per_agent_and_day_and_who_may_read_it(inst, anon, member, make_org):
    run = start_run(inst.admin, inst)
    task = claim(anon, inst.key)
    assert _complete(anon, inst, task, metrics=metrics(15_000, 7200)).status == 200
    viewer = member(inst.admin, inst.org_id, "viewer")
    usage = viewer.get(f"/orgs/{inst.org_id}/usage")
    assert usage.status == 200
    body = usage.body
    assert body["total_usd"] == "16.50" and body["runs"] == 1 and body["records"] == 15_000
    assert body["cpu_seconds"] == 7200
    assert body["by_agent"] == [{"agent_id": inst.agent_id, "runs": 1, "records": 15_000, "cpu_seconds": 7200.0,
                                 "charge_usd": "16.50", "charge_micros": 16_500_000}]
    assert len(body["by_day"]) == 1 and body["by_day"][0]["charge_usd"] == "16.50"
    assert body["items"][0]["run_id"] == run["id"] and body["items"][0]["charge_usd"] == "16.50"
    stranger, _ = make_org()
    assert stranger.get(f"/orgs/{inst.org_id}/usage").status == 404
    assert viewer.get(f"/orgs/{inst.org_id}/usage?period=2026-13").status == 422
    assert viewer.get(f"/orgs/{inst.org_id}/usage?period=2020-01").body["runs"] == 0
    assert viewer.put(f"/orgs/{inst.org_id}/billing/limits", json={"monthly_budget_usd": "5"}).status == 403
    for cap in ("0", "-1", "0.0000001", True):
        bad_run = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                          "max_charge_usd": cap})
        assert bad_run.status == 422, (cap, bad_run)
    bad = inst.admin.put(f"/orgs/{inst.org_id}/billing/limits", json={"monthly_budget_usd": "-5"})
    assert bad.status == 422
    assert inst.admin.get(f"/orgs/{inst.org_id}/billing/limits").body["monthly_budget_usd"] is None


def _period_row(container, org_id, period):
    with container.db.read() as tx:
        return tx.fetch_one("SELECT charged_micros, reserved_micros FROM billing_periods WHERE org_id = %s "
                            "AND period = %s", org_id, period)


@pytest.mark.parametrize("months_later", [0, 1])
def test_the_charge_ends_the_runs_reservation_in_its_own_month(container, inst, months_later):
    """A run reserves its cap in the month it starts; its charge (in the same statement) is added
    to the month it ends in and the reservation leaves the month that holds it, once, however
    often the completion is retried."""

    _limits(inst, monthly_budget_usd="10")
    held = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                   "max_charge_usd": "2"})
    other = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                    "max_charge_usd": "3"})
    assert held.status == 201 and other.status == 201
    now = datetime.now(UTC)
    start = now.date().replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1) if months_later else start
    assert _period_row(container, inst.org_id, start) == {"charged_micros": 0, "reserved_micros": 5_000_000}
    pricing = PricingSpec(base_usd=Decimal("1.25"), per_record_usd=Decimal(0), per_cpu_hour_usd=Decimal(0))
    for _ in range(2):  # a retried completion changes nothing more
        with container.db.batch() as tx:
            container.billing.charge_run(tx, run_id=held.body["run_id"], org_id=inst.org_id,
                                         agent_id=inst.agent_id, version="1.0.1", pricing=pricing,
                                         outcome=Outcome.SUCCEEDED, records=0, cpu_seconds=0, actor="test",
                                         at=datetime.combine(end, now.timetz()) + timedelta(hours=1))
    assert _period_row(container, inst.org_id, start)["reserved_micros"] == 3_000_000  # the other run's
    assert _period_row(container, inst.org_id, end)["charged_micros"] == 1_250_000
    if months_later:
        assert _period_row(container, inst.org_id, start)["charged_micros"] == 0
