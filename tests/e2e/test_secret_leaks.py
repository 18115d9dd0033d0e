"""No secret reaches a log, a response, an audit entry or a webhook payload, whatever channel brings it.

Every format of ``tests/support/secrets.py`` (realistic, fake) goes in through every channel a
caller or an agent has: org, API-key and webhook names and descriptions, webhook URLs, request
headers, request paths, org preferences, install config, run inputs (stored, and refused by a
schema that quotes them), the log
lines and the error a data plane posts, and a billing URL the built-in agent fails to fetch with a
real worker. Then everything that came out is searched: each JSON log line written (and pytest's
``caplog`` records), every API response body other than a credential's own one-time reveal, every
audit entry of the orgs, every webhook payload, the runs' stored errors and logs. Zero hits.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from registry_support import make_manifest, publish, unique_name
from runs_support import Installed, install_builtin, start_run, thread_worker
from support.secrets import SecretCase, secret_table
from support.wait import wait_until

from shared.kernel.jsonlog import configure_logging
from shared.kernel.net import free_port

TABLE = secret_table()
SECRETS = [(case.name, secret) for case in TABLE for secret in case.secrets]
HOOK_HOST = "https://93.184.216.34"  # a public address the destination policy accepts; nothing is delivered




class Outputs:
    """Everything the platform said during the test."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, Any]] = []

    def record(self, what: str, body: Any) -> None:
        self.responses.append((what, body))


@pytest.fixture
def outputs(anon: Any, monkeypatch: pytest.MonkeyPatch) -> Outputs:
    """Every response body the test clients receive, recorded."""
    seen = Outputs()
    client_class = type(anon)
    original = client_class.request

    def request(self: Any, method: str, path: str, **kw: Any) -> Any:
        resp = original(self, method, path, **kw)
        seen.record(f"{method} {path} -> {resp.status}", resp.body)
        return resp

    monkeypatch.setattr(client_class, "request", request)
    return seen


@pytest.fixture
def log_stream(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    caplog.set_level(logging.DEBUG)
    try:
        yield stream
    finally:
        logging.getLogger().handlers = [h for h in logging.getLogger().handlers if h.get_name() != "marketplace-json"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _open_agent(dev: Any, org_id: str, padmin: Any) -> str:
    """A published agent whose inputs and config take anything (so the run stores them)."""
    manifest = make_manifest(unique_name("leaks"), inputs={"type": "object"}, config={"type": "object"},
                             deployment=["saas"])
    return publish(dev, org_id, padmin, manifest)


def _registered_install(container: Any, admin: Any, org_id: str, agent_id: str, config: dict[str, Any],
                        anon: Any, settings: Any) -> Installed:
    resp = admin.post(f"/orgs/{org_id}/install", json={"agent_id": agent_id, "config": config})
    assert resp.status == 201, resp
    key = json.loads((settings.dataplanes_dir / f"{resp.body['id']}.json").read_text())["api_key"]
    reg = anon.post("/dataplanes/register", token=key,
                    json={"version": "test", "hostname": "test", "capabilities": ["langgraph"]})
    assert reg.status == 200, reg
    return Installed(admin=admin, org_id=org_id, deployment_id=resp.body["id"], agent_id=resp.body["agent_id"],
                     key=key)


def _names_headers_and_webhooks(case: SecretCase, make_org: Any, anon: Any) -> str:
    """Org, API-key and webhook names/descriptions, webhook URLs and request headers of one case."""
    admin, org_id = make_org(f"Acme {case.text}"[:120])
    assert admin.post(f"/orgs/{org_id}/api-keys", json={"name": case.text[:120]}).status == 201
    # A webhook whose URL carries the secret in its query and whose description quotes it.
    hook = admin.post(f"/orgs/{org_id}/webhooks", json={
        "url": f"{HOOK_HOST}/hooks?note={quote(case.text, safe='')}&key={quote(case.text[:60], safe='')}",
        "events": ["run.failed"], "description": case.text[:500]})
    assert hook.status == 201, hook
    admin.get(f"/orgs/{org_id}/webhooks")
    admin.get(f"/orgs/{org_id}/webhooks/{hook.body['id']}")
    # A webhook URL the policy refuses (credentials in it): the refusal must not quote them.
    refused = admin.post(f"/orgs/{org_id}/webhooks", json={
        "url": f"https://ops:{quote(case.text, safe='')}@93.184.216.34/hooks", "events": ["run.failed"]})
    assert refused.status == 422, refused
    # Request headers: a credential as the bearer, as the request id, as an idempotency key.
    line = _one_line(case.text)
    anon.get("/me", headers={"Authorization": f"Bearer {line}"})
    anon.get("/me", headers={"Authorization": line, "X-Request-Id": line[:64]})
    admin.post("/orgs", json={"name": "Idem"}, headers={"Idempotency-Key": line[:255]})
    # Org preferences: the credential as a key (audited by name) and as a value.
    assert admin.put(f"/orgs/{org_id}/preferences", json={"data": {
        case.text[:100]: case.text, "note": case.text, "api_token": line}}).status == 200
    admin.get(f"/orgs/{org_id}/preferences")
    # A path that quotes it: the 404 names the path.
    anon.get(f"/nope/{quote(line, safe='')}")
    admin.get(f"/orgs/{org_id}/webhooks/{quote(line, safe='')}")
    admin.get(f"/orgs/{org_id}/api-keys")
    admin.get(f"/orgs/{org_id}")
    admin.get("/me")
    return org_id


def test_no_secret_reaches_a_log_a_response_an_audit_entry_or_a_webhook_payload(
        container, app, make_org, make_user, anon, settings, live_url, outputs, log_stream, caplog):
    assert len({case.name for case in TABLE}) >= 20
    blob = "\n".join(case.text for case in TABLE)
    orgs = [_names_headers_and_webhooks(case, make_org, anon) for case in TABLE]

    # Install config and run inputs, stored for the agent (an agent that takes any object).
    padmin = make_user("padmin", platform_admin=True)
    admin, org_id = make_org("Leaks")
    orgs.append(org_id)
    hook = admin.post(f"/orgs/{org_id}/webhooks", json={"url": f"{HOOK_HOST}/runs", "events": ["run.failed"]})
    assert hook.status == 201
    agent_id = _open_agent(admin, org_id, padmin)
    config = {case.name: case.text for case in TABLE} | {"api_token": "tok-" + TABLE[0].secrets[0]}
    inst = _registered_install(container, admin, org_id, agent_id, config, anon, settings)
    admin.get(f"/orgs/{org_id}/deployments/{inst.deployment_id}")
    admin.get(f"/orgs/{org_id}/deployments")
    run = start_run(admin, inst, {case.name: case.text for case in TABLE} | {"all": blob})
    # Act as its data plane: log lines and an error quoting every format.
    task = anon.get("/tasks/next?wait=5&lease_seconds=60", token=inst.key).body
    assert task["run_id"] == run["id"] and task["inputs"]["all"] == blob  # the agent gets them whole
    lines = [{"seq": i + 1, "ts": "2026-01-01T00:00:00Z", "level": "error", "step": "fetch",
              "message": f"fetch failed: {case.text}", "fields": {"source": case.text, "password": "p4ss-" + case.name}}
             for i, case in enumerate(TABLE)]
    logs = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/logs", token=inst.key,
                     json={"lease_token": task["lease_token"], "lines": lines})
    assert logs.status == 200, logs
    done = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/complete", token=inst.key, json={
        "task_id": task["task_id"], "lease_token": task["lease_token"], "status": "failed",
        "metrics": {"records_processed": 0, "cpu_seconds": 0.1}, "error": f"RuntimeError: {blob}"})
    assert done.status == 200, done
    failed = admin.get(f"/agents/{inst.agent_id}/runs/{run['id']}").body
    assert failed["status"] == "failed" and "[REDACTED]" in failed["error"]
    admin.get(f"/agents/{inst.agent_id}/runs/{run['id']}/logs?limit=1000")
    admin.get(f"/orgs/{org_id}/runs")

    # Run inputs a schema refuses: the 422 quotes what it refused.
    builtin = install_builtin(container, make_org, anon, settings, register=True)
    orgs.append(builtin.org_id)
    for case in TABLE:
        refused = builtin.admin.post(f"/agents/{builtin.agent_id}/runs", json={
            "deployment_id": builtin.deployment_id, "inputs": {"currency": case.text, case.text[:40]: 1}})
        assert refused.status == 422, refused

    # A billing URL with credentials that the built-in agent fails to fetch, with a real worker.
    by_name = {case.name: case for case in TABLE}
    path_secrets = [by_name[n].secrets[0] for n in ("GitHub personal access token", "Stripe secret key",
                                                     "Google API key")] + [by_name["platform API key"].text]
    billing_url = (f"http://billing:{quote(by_name['password pair'].secrets[0])}@127.0.0.1:{free_port()}/"
                   + "/".join(path_secrets) + "/focus.csv?" + by_name["AWS presigned URL"].text.split("?", 1)[1]
                   + "&auth=" + quote(by_name["Bearer header"].text.split(": ", 1)[1]))
    fetching = install_builtin(container, make_org, anon, settings, register=False,
                               config={"billing_source": billing_url})
    orgs.append(fetching.org_id)
    fetching.admin.post(f"/orgs/{fetching.org_id}/webhooks", json={"url": f"{HOOK_HOST}/x", "events": ["run.failed"]})
    with thread_worker(live_url, fetching.key):
        fetch_run = start_run(fetching.admin, fetching)
        final = wait_until(lambda: (r := fetching.admin.get(
            f"/agents/{fetching.agent_id}/runs/{fetch_run['id']}").body)["status"] in ("failed", "dead") and r,
            timeout=90, interval=0.3, what="the fetching run to fail")
    # The agent names where it failed; the path's credentials are masked, the rest never shown.
    assert "cannot fetch billing data from http://127.0.0.1:" in final["error"]
    assert "/[REDACTED]/[REDACTED]/[REDACTED]/[REDACTED]/focus.csv" in final["error"]
    fetching.admin.get(f"/agents/{fetching.agent_id}/runs/{fetch_run['id']}/logs?limit=1000")

    # Everything that came out.
    places: list[tuple[str, str]] = [("JSON log stream", log_stream.getvalue()), ("caplog", caplog.text),
                                     ("caplog messages", "\n".join(r.getMessage() for r in caplog.records))]
    for what, body in outputs.responses:
        # The data plane's own reads (its deployment's config, a task's inputs) are how the agent
        # gets what it was given: the one place these values must arrive whole.
        if what.startswith(("POST /dataplanes/register ", "GET /tasks/next")):
            continue
        places.append((f"response {what}", json.dumps(body)))
    for org in orgs:
        with container.db.read() as tx:
            audit = tx.fetch_all("SELECT action, details FROM audit_log WHERE org_id = %s", org)
            events = tx.fetch_all("SELECT type, data FROM webhook_events WHERE org_id = %s", org)
            runs = tx.fetch_all("SELECT id, error FROM runs WHERE org_id = %s", org)
        places.append((f"audit of {org}", json.dumps(audit, default=str)))
        places.append((f"webhook payloads of {org}", json.dumps(events, default=str)))
        for row in runs:
            with container.db.read() as tx:
                stored_logs = tx.fetch_all("SELECT message, fields FROM run_logs WHERE run_id = %s", row["id"])
                task_errors = tx.fetch_all("SELECT last_error FROM tasks WHERE run_id = %s", row["id"])
            places.append((f"run {row['id']} error, logs, task errors",
                           json.dumps([row["error"], stored_logs, task_errors], default=str)))
    assert any(what.startswith("audit") and "run.failed" in text for what, text in places)
    assert any("webhook payloads" in what and "[REDACTED]" in text for what, text in places)

    leaks = [(name, what) for what, text in places for name, secret in SECRETS if secret in text]
    assert leaks == [], "\n".join(f"{name} in {what}" for name, what in leaks)
