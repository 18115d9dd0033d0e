"""Billing stops runs that execute for real: a worker (a thread of this process, talking HTTP to
the gateway) runs an agent whose single step spins the CPU in a sandboxed child process.

* a run crossing its maximum charge mid-step ends cancelled within 5 s of the usage report that
  crossed (the worker's cap stop grace, shorter than the sandbox's own, kills the child);
* the kill switch (an admin's freeze) cancels the org's running, queued and waiting runs;
* a freeze for an invoice unpaid past the grace period does the same, through the billing cycle.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from approvals_support import park
from conftest import Client
from runs_support import Installed, install_builtin, start_run
from support.hostile_agent import manifest as hostile_manifest
from support.hostile_agent import write_project
from support.wait import wait_until
from test_billing_invoices import PRICING, WEBHOOK_SECRET, fake_stripe, stripe_container  # noqa: F401 - fixtures

from functions.gateway import create_gateway
from runtime.client import DataPlaneClient
from runtime.executor import Outcome as RunOutcome
from runtime.executor import RunSpec
from runtime.sandbox import SandboxExecutor, SandboxOptions, Zygote
from runtime.worker import Worker, WorkerOptions
from shared.billing import Outcome
from shared.kernel.ids import new_id

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox (own uid, namespaces) needs a root runner")

FINAL = {"succeeded", "failed", "cancelled", "dead"}
SANDBOX_GRACE = 5.0  # the sandbox's default: what a user's cancel of a step that never ends waits


class SpinningExecutor(SandboxExecutor):
    """The sandbox running, whatever the task's agent, the hostile project's one step that spins
    the CPU for ``seconds`` (a step that never reaches a boundary in time)."""

    def __init__(self, options: SandboxOptions, zygote: Zygote, project: Path, seconds: float = 60) -> None:
        super().__init__(options, zygote=zygote)
        self.project, self.seconds = project, seconds

    def execute(self, spec: RunSpec, **kwargs: Any) -> RunOutcome:  # type: ignore[override]
        spec = replace(spec, manifest=hostile_manifest(timeout=120), config={}, package_digest=None,
                       inputs={"attack": "spin", "arg": self.seconds})
        return super().execute(spec, package_dir=self.project, **kwargs)


@pytest.fixture(scope="module")
def spinning(agent_files: Path) -> Iterator[SpinningExecutor]:
    zygote = Zygote()
    project = write_project(agent_files / "spinning-agent", timeout=120)
    yield SpinningExecutor(SandboxOptions(root=agent_files / "sandbox-billing", stop_grace=SANDBOX_GRACE),
                           zygote, project)
    zygote.close()


@contextlib.contextmanager
def worker(live_url: str, inst: Installed, executor: SandboxExecutor) -> Iterator[tuple[Worker, list[float]]]:
    """A worker thread for ``inst``'s deployment; the list gets the moment of the usage report that
    first answered stop (the run crossed its maximum charge)."""
    client = DataPlaneClient(live_url, inst.key)
    crossed: list[float] = []
    report = client.report_usage

    def watched(*args: Any, **kwargs: Any) -> bool:
        stop = report(*args, **kwargs)
        if stop and not crossed:
            crossed.append(time.monotonic())
        return stop

    client.report_usage = watched  # type: ignore[method-assign]
    serving = Worker(client, options=WorkerOptions(lease_seconds=10, poll_wait=1.0, drain_seconds=2,
                                                   sandbox=executor.options), executor=executor)
    stop = threading.Event()
    thread = threading.Thread(target=serving.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: serving.registration is not None, what="the worker to register")
        yield serving, crossed
    finally:
        stop.set()
        thread.join(timeout=30)
        client.close()
        assert not thread.is_alive()


def _run(inst: Installed, run_id: str) -> dict[str, Any]:
    return inst.admin.get(f"/agents/{inst.agent_id}/runs/{run_id}").body


def _running(inst: Installed, run_id: str) -> None:
    wait_until(lambda: _run(inst, run_id)["status"] == "running", timeout=30, interval=0.05,
               what=f"run {run_id} to run")


def _ended(inst: Installed, run_id: str, timeout: float = 30) -> dict[str, Any]:
    return wait_until(lambda: (r := _run(inst, run_id))["status"] in FINAL and r, timeout=timeout, interval=0.05,
                      what=f"run {run_id} to end")


def test_a_run_crossing_its_cap_mid_step_is_stopped_within_five_seconds(live_url, container, make_org, anon,
                                                                         settings, spinning):
    inst = install_builtin(container, make_org, anon, settings, register=False)
    # The built-in agent's prices: 0.50 base (counted in what the run would be charged so far) and
    # 0.50 an hour of CPU, so 0.5003 USD is crossed after about 2.2 s of CPU of a step of 60 s.
    with worker(live_url, inst, spinning) as (_, crossed):
        run = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id,
                                                                     "max_charge_usd": "0.5003"}).body
        _running(inst, run["id"])
        wait_until(lambda: crossed, timeout=30, interval=0.01, what="a usage report past the cap")
        final = _ended(inst, run["id"])
        ended = time.monotonic()
    took = ended - crossed[0]
    assert final["status"] == "cancelled", final
    assert took < 5.0, f"the run ended {took:.2f} s after the usage report that crossed its cap"
    assert final["metrics"]["cpu_seconds"] < 10  # killed mid-step, long before the step's 60 s
    lines = [line["message"] for line in inst.admin.get(f"/agents/{inst.agent_id}/runs/{run['id']}/logs?limit=100")
             .body["items"]]
    assert any("did not stop within 2 s and was killed" in line for line in lines), lines
    usage = inst.admin.get(f"/orgs/{inst.org_id}/usage").body
    (item,) = [i for i in usage["items"] if i["run_id"] == run["id"]]
    assert item["outcome"] == "cancelled" and item["charge_micros"] <= 500_300


def _three_runs(container, make_org, anon, settings, member, live_url, spinning, stack: contextlib.ExitStack
                ) -> tuple[Installed, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """An org with a run waiting for approval, one running (a step of 60 s) and one queued behind it."""
    inst = install_builtin(container, make_org, anon, settings)
    waiting = park(container, make_org, anon, settings, member, inst=inst).run
    stack.enter_context(worker(live_url, inst, spinning))
    running = start_run(inst.admin, inst)
    _running(inst, running["id"])
    queued = start_run(inst.admin, inst)
    assert _run(inst, waiting["id"])["status"] == "awaiting_approval"
    assert _run(inst, queued["id"])["status"] == "queued"
    return inst, waiting, running, queued


def _all_cancelled(inst: Installed, *runs: dict[str, Any]) -> None:
    started = time.monotonic()
    for run in runs:
        assert _ended(inst, run["id"], timeout=SANDBOX_GRACE + 10)["status"] == "cancelled"
    assert time.monotonic() - started < SANDBOX_GRACE + 5
    refused = inst.admin.post(f"/agents/{inst.agent_id}/runs", json={"deployment_id": inst.deployment_id})
    assert refused.status == 409 and refused.body["error"]["code"] == "spend_frozen"


def test_the_kill_switch_cancels_running_queued_and_waiting_runs(live_url, container, make_org, anon, settings,
                                                                  member, spinning):
    with contextlib.ExitStack() as stack:
        inst, waiting, running, queued = _three_runs(container, make_org, anon, settings, member, live_url,
                                                     spinning, stack)
        frozen = inst.admin.post(f"/orgs/{inst.org_id}/billing/freeze", json={"reason": "runaway agent"})
        assert frozen.status == 200 and frozen.body["frozen"] is True
        _all_cancelled(inst, waiting, running, queued)


def _signed(payload: bytes) -> str:
    stamp = int(time.time())
    return f"t={stamp},v1=" + hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + payload,
                                       hashlib.sha256).hexdigest()


def test_a_freeze_for_an_unpaid_invoice_cancels_the_orgs_runs(live_url, container, stripe_container, make_org,  # noqa: F811
                                                               anon, settings, member, spinning):
    with contextlib.ExitStack() as stack:
        inst, waiting, running, queued = _three_runs(container, make_org, anon, settings, member, live_url,
                                                     spinning, stack)
        # An invoice of the org whose payment failed (grace period: 0 days in stripe_container).
        with stripe_container.db.transaction() as tx:
            stripe_container.billing.charge_run(tx, run_id=new_id("run"), org_id=inst.org_id, agent_id=inst.agent_id,
                                                version="1.0.1", pricing=PRICING, outcome=Outcome.SUCCEEDED,
                                                records=10, cpu_seconds=1, actor="test",
                                                at=datetime(2040, 11, 3, tzinfo=UTC))
        invoicing = stripe_container.invoicing
        invoicing.close_period(date(2040, 11, 1))
        invoicing.send_drafts()
        (november,) = [i for i in invoicing.invoices(inst.org_id).items if i.period == date(2040, 11, 1)]
        payload = json.dumps({"id": "evt_failed_" + november.id, "object": "event", "type": "invoice.payment_failed",
                              "data": {"object": {"id": november.stripe_invoice_id, "object": "invoice"}}}).encode()
        failed = Client(create_gateway(stripe_container)).request(
            "POST", "/billing/stripe/webhook", data=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": _signed(payload)})
        assert failed.status == 200 and failed.body["handled"] is True, failed
        time.sleep(0.05)
        # The billing cycle's freeze (the scheduled job runs freeze_unpaid).
        assert inst.org_id in invoicing.freeze_unpaid()
        _all_cancelled(inst, waiting, running, queued)
    entries = inst.admin.get(f"/orgs/{inst.org_id}/audit?limit=200").body["items"]
    assert any(e["action"] == "billing.frozen" and e["actor"] == "billing" for e in entries)
    assert any(e["action"] == "run.cancel_requested" and e["actor"] == "billing" for e in entries)
