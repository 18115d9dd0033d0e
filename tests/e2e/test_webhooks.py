"""Webhooks end to end: the API, the SSRF rules, the outbox, signed delivery to a real local receiver,
retries, 410, isolation between orgs, and roles.

The shared ``app`` runs with the production default (loopback receivers refused). Delivery tests use a
second container over the same database with ``webhooks_allow_loopback`` set, as ``marketplace up``
does locally, so a receiver thread on 127.0.0.1 can take deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks
from conftest import Client
from support.http import Recorded, RecordingServer, Reply

from functions.gateway import create_gateway
from shared.composition import Container, build_container
from shared.kernel.ids import id_time
from shared.webhooks.destinations import DestinationPolicy
from shared.webhooks.service import RetrySchedule, WebhookDispatcher, WebhookService

# -- a real receiver -----------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1: records every delivery and answers from a script (then 200)."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.server = RecordingServer(self._reply)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"{self.server.url}/hooks/in?tenant=t1"

    @property
    def requests(self) -> list[Recorded]:
        return self.server.received()

    def answer(self, *statuses: int, delay: float = 0.0, headers: dict[str, str] | None = None) -> None:
        self.script.extend(Reply(s, b'{"ok": true}' if s < 300 else b"receiver says no", headers or {}, delay)
                           for s in statuses)

    def wait_for(self, count: int) -> list[Recorded]:
        return self.server.wait_for(count)

    def _reply(self, _request: Recorded) -> Reply:
        return self.script.pop(0) if self.script else Reply(200, b'{"ok": true}')


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.close()


@pytest.fixture(scope="module")
def loop_container(settings) -> Iterator[Container]:
    built = build_container(settings.model_copy(update={"webhooks_allow_loopback": True}), migrate=False)
    yield built
    built.close()


@pytest.fixture(scope="module")
def loop_app(loop_container):
    return create_gateway(loop_container)


@pytest.fixture
def loop_org(make_org, loop_app):
    """An org and its admin, talking to the gateway that allows loopback receivers."""
    admin, org_id = make_org()
    return Client(loop_app, admin.token), org_id


def service(container: Container, *, resolver=None, schedule: RetrySchedule | None = None,
            timeout: float = 5.0) -> WebhookService:
    """A webhook service over the shared database, optionally with its own resolver or schedule."""
    base = container.webhooks
    policy = base.destinations if resolver is None else DestinationPolicy(resolver, allow_loopback=True)
    return WebhookService(container.db, container.audit, base.secrets, policy,
                          schedule=schedule or RetrySchedule(jitter=0), timeout_seconds=timeout)


def emit(container: Container, org_id: str, event: str = "run.completed", data: dict[str, Any] | None = None
         ) -> str | None:
    with container.db.transaction() as tx:
        emitted = container.webhooks.emit(tx, org_id=org_id, event=event, data=data or {"run_id": "run_123"})
    return emitted.event_id


def make_hook(admin: Client, org_id: str, url: str, events: list[str] | None = None) -> dict[str, Any]:
    resp = admin.post(f"/orgs/{org_id}/webhooks", json={"url": url, "events": events or ["run.completed"]})
    assert resp.status == 201, resp
    return resp.body


def make_due(container: Container, webhook_id: str) -> None:
    with container.db.transaction() as tx:
        tx.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE webhook_id = %s "
                   "AND status = 'pending'", webhook_id)


def verify(secret: str, req: Recorded) -> dict[str, Any]:
    """Standard Webhooks verification written from the specification, independent of the platform code."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{req.headers['webhook-id']}.{req.headers['webhook-timestamp']}.".encode() + req.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in req.headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, o) for o in offered), "signature does not verify"
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60
    return json.loads(req.body)


class TableResolver:
    """A resolver answering from a table the test changes between attempts (DNS rebinding)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    def resolve(self, host: str, port: int) -> list[str]:
        if host not in self.table:
            raise OSError("no such host")
        return self.table[host]


def db_row(container: Container, sql: str, *args: Any) -> dict[str, Any] | None:
    with container.db.read() as tx:
        return tx.fetch_one(sql, *args)


# -- the API ---------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_stores_it_encrypted(container, make_org):
    admin, org_id = make_org()
    resp = admin.post(f"/orgs/{org_id}/webhooks", json={
        "url": "https://93.184.216.34/hooks?token=abc", "events": ["run.failed", "run.completed", "run.failed"],
        "description": "ops pager"})
    assert resp.status == 201, resp
    hook = resp.body
    secret = hook["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert hook["events"] == ["run.completed", "run.failed"]
    # The URL is stored whole (deliveries go there) and shown with its query values masked.
    assert (hook["status"], hook["url"], hook["description"]) == (
        "active", "https://93.184.216.34/hooks?token=[REDACTED]", "ops pager")

    listed = admin.get(f"/orgs/{org_id}/webhooks")
    assert listed.status == 200 and [h["id"] for h in listed.body["items"]] == [hook["id"]]
    one = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}")
    assert one.status == 200
    for body in (listed.body["items"][0], one.body):
        assert "secret" not in body and secret not in json.dumps(body)

    row = db_row(container, "SELECT * FROM webhooks WHERE id = %s", hook["id"])
    sealed = bytes(row["secret_sealed"])
    assert secret.encode() not in sealed and base64.b64decode(secret[6:]) not in sealed
    assert secret not in json.dumps(row, default=str)
    assert container.secrets.open(org_id, "webhook", hook["id"], sealed) == secret.encode()

    audit = admin.get(f"/orgs/{org_id}/audit", query_string={"action": "webhook.created"}).body["items"]
    assert audit[0]["target"] == hook["id"] and audit[0]["details"]["events"] == ["run.completed", "run.failed"]
    assert "secret" not in json.dumps(audit) and "whsec_" not in json.dumps(audit)


def test_a_retried_create_replays_the_first_webhook_and_the_secret_never_rests_in_clear(container, make_org):
    admin, org_id = make_org()
    headers = {"Idempotency-Key": f"create-hook-{org_id}"}
    body = {"url": "https://93.184.216.34/a", "events": ["run.completed"]}
    first = admin.post(f"/orgs/{org_id}/webhooks", json=body, headers=headers)
    second = admin.post(f"/orgs/{org_id}/webhooks", json=body, headers=headers)
    assert first.status == second.status == 201
    assert second.body == first.body and second.headers.get("Idempotent-Replayed") == "true"
    assert [h["id"] for h in admin.get(f"/orgs/{org_id}/webhooks").body["items"]] == [first.body["id"]]
    secret = first.body["secret"]
    with container.db.read() as tx:
        rows = tx.fetch_all("SELECT * FROM idempotency_keys WHERE key = %s", headers["Idempotency-Key"])
    assert len(rows) == 1 and rows[0]["status_code"] == 201
    assert secret.encode() not in bytes(rows[0]["response_sealed"])
    assert secret not in json.dumps(rows, default=str)


SSRF_URLS = [
    ("http://93.184.216.34/hook", "plain http to a public address"),
    ("https://user:pw@93.184.216.34/", "credentials in the URL"),
    ("file:///etc/passwd", "file scheme"),
    ("ftp://93.184.216.34/", "ftp scheme"),
    ("https://10.1.2.3/", "private 10/8"),
    ("https://172.16.5.4/", "private 172.16/12"),
    ("https://192.168.1.1/", "private 192.168/16"),
    ("https://127.0.0.1/", "loopback (not allowed in production)"),
    ("https://localhost:8443/", "a name resolving to loopback"),
    ("https://169.254.169.254/latest/meta-data/", "cloud metadata, link-local"),
    ("https://0.0.0.0/", "unspecified"),
    ("https://100.64.0.1/", "shared address space"),
    ("https://224.0.0.1/", "multicast"),
    ("https://240.0.0.1/", "reserved"),
    ("https://198.18.0.1/", "benchmarking"),
    ("https://[::1]/", "IPv6 loopback"),
    ("https://[::]/", "IPv6 unspecified"),
    ("https://[fc00::1]/", "IPv6 unique local"),
    ("https://[fd12:3456::1]/", "IPv6 unique local (fd)"),
    ("https://[fe80::1]/", "IPv6 link-local"),
    ("https://[ff02::1]/", "IPv6 multicast"),
    ("https://[::ffff:10.0.0.1]/", "IPv4-mapped private"),
    ("https://[::ffff:169.254.169.254]/", "IPv4-mapped metadata"),
    ("https://[64:ff9b::a00:1]/", "NAT64 of a private address"),
    ("https://2130706433/", "decimal form of 127.0.0.1"),
    ("https://does-not-exist.invalid/hook", "a host that does not resolve"),
    ("https:///no-host", "no host"),
    ("https://example.com:99999/", "bad port"),
    ("not a url", "not a URL"),
]


@pytest.mark.parametrize(("url", "why"), SSRF_URLS, ids=[w for _, w in SSRF_URLS])
def test_unsafe_urls_are_refused_and_nothing_is_stored(container, make_org, url, why):
    admin, org_id = make_org()
    resp = admin.post(f"/orgs/{org_id}/webhooks", json={"url": url, "events": ["run.completed"]})
    assert resp.status == 422, (why, resp)
    assert resp.body["error"]["details"][0]["path"] == "url", resp
    assert resp.body["error"]["details"][0]["message"]
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM webhooks WHERE org_id = %s", org_id) == 0
    assert admin.get(f"/orgs/{org_id}/audit", query_string={"action": "webhook.created"}).body["items"] == []


@pytest.mark.parametrize(("body", "path"), [
    ({"url": "https://93.184.216.34/", "events": []}, "events"),
    ({"url": "https://93.184.216.34/", "events": ["run.exploded"]}, "events[0]"),
    ({"url": "https://93.184.216.34/"}, "events"),
    ({"events": ["run.completed"]}, "url"),
    ({"url": "https://93.184.216.34/", "events": ["run.completed"], "secret": "mine"}, "secret"),
    ({"url": "https://93.184.216.34/", "events": ["run.completed"], "description": "x" * 501}, "description"),
])
def test_bad_bodies_are_422_with_paths(make_org, body, path):
    admin, org_id = make_org()
    resp = admin.post(f"/orgs/{org_id}/webhooks", json=body)
    assert resp.status == 422, resp
    assert path in [d["path"] for d in resp.body["error"]["details"]], resp


def test_list_paginates(make_org):
    admin, org_id = make_org()
    ids = [make_hook(admin, org_id, f"https://93.184.216.34/{n}")["id"] for n in range(3)]
    first = admin.get(f"/orgs/{org_id}/webhooks", query_string={"limit": 2})
    assert [h["id"] for h in first.body["items"]] == ids[::-1][:2] and first.body["next_cursor"]
    second = admin.get(f"/orgs/{org_id}/webhooks", query_string={"limit": 2, "cursor": first.body["next_cursor"]})
    assert [h["id"] for h in second.body["items"]] == [ids[0]] and second.body["next_cursor"] is None
    full = admin.get(f"/orgs/{org_id}/webhooks", query_string={"limit": 3}).body  # a full last page
    assert [h["id"] for h in full["items"]] == ids[::-1] and full["next_cursor"] is None
    assert admin.get(f"/orgs/{org_id}/webhooks", query_string={"cursor": "garbage!"}).status == 400


def _tampered(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


@pytest.mark.parametrize("cursor", [
    "garbage!", _tampered({"started_at": "2024-01-01T00:00:00+00:00", "id": "x"}),
    _tampered({"created_at": "yesterday", "id": "x"}), _tampered({"created_at": "2024-01-01T00:00:00+00:00", "id": 1}),
    _tampered({"created_at": "2024-01-01T00:00:00+00:00", "id": "x\u0000"}),
])
def test_a_tampered_cursor_is_400_on_both_lists(make_org, cursor):
    admin, org_id = make_org()
    hook = make_hook(admin, org_id, "https://93.184.216.34/x")
    for path in (f"/orgs/{org_id}/webhooks", f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries"):
        resp = admin.get(path, query_string={"cursor": cursor})
        assert resp.status == 400 and resp.body["error"]["code"] == "invalid_cursor", (path, resp)


def test_delete_removes_the_webhook_and_is_audited(container, make_org):
    admin, org_id = make_org()
    hook = make_hook(admin, org_id, "https://93.184.216.34/x")
    emit(container, org_id)
    assert admin.delete(f"/orgs/{org_id}/webhooks/{hook['id']}").status == 204
    assert admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}").status == 404
    assert admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").status == 404
    assert admin.delete(f"/orgs/{org_id}/webhooks/{hook['id']}").status == 404
    assert db_row(container, "SELECT 1 AS x FROM webhooks WHERE id = %s", hook["id"]) is None
    assert db_row(container, "SELECT 1 AS x FROM webhook_deliveries WHERE webhook_id = %s", hook["id"]) is None
    entries = admin.get(f"/orgs/{org_id}/audit", query_string={"action": "webhook.deleted"}).body["items"]
    assert entries[0]["target"] == hook["id"]
    assert emit(container, org_id) is None


WEBHOOK_OPS = [
    ("create", "POST", "/orgs/{org}/webhooks", {"url": "https://93.184.216.34/r", "events": ["run.completed"]}),
    ("list", "GET", "/orgs/{org}/webhooks", None),
    ("get", "GET", "/orgs/{org}/webhooks/{hook}", None),
    ("deliveries", "GET", "/orgs/{org}/webhooks/{hook}/deliveries", None),
    ("delete", "DELETE", "/orgs/{org}/webhooks/{hook}", None),
]


@pytest.mark.parametrize("role", ["admin", "developer", "operator", "approver", "viewer"])
def test_webhooks_are_admin_only(make_org, member, role):
    admin, org_id = make_org()
    caller = admin if role == "admin" else member(admin, org_id, role)
    for name, method, path, body in WEBHOOK_OPS:
        hook = make_hook(admin, org_id, "https://93.184.216.34/r")
        resp = caller.request(method, path.format(org=org_id, hook=hook["id"]), json=body)
        if role == "admin":
            assert resp.status in (200, 201, 204), (name, resp)
        else:
            assert resp.status == 403, (role, name, resp)


def test_other_orgs_webhooks_are_404(make_org, make_user):
    admin_a, org_a = make_org()
    admin_b, org_b = make_org("Other")
    hook = make_hook(admin_a, org_a, "https://93.184.216.34/a")
    for path in (f"/orgs/{org_b}/webhooks/{hook['id']}", f"/orgs/{org_b}/webhooks/{hook['id']}/deliveries"):
        assert admin_b.get(path).status == 404
    assert admin_b.delete(f"/orgs/{org_b}/webhooks/{hook['id']}").status == 404
    for path in (f"/orgs/{org_a}/webhooks", f"/orgs/{org_a}/webhooks/{hook['id']}",
                 f"/orgs/{org_a}/webhooks/{hook['id']}/deliveries"):
        assert admin_b.get(path).status == 404
        assert make_user("stranger").get(path).status == 404
    assert admin_a.get(f"/orgs/{org_a}/webhooks/{hook['id']}").status == 200


def test_dispatch_endpoint_is_for_platform_admins(make_user):
    assert make_user().post("/internal/webhooks/dispatch", json={}).status == 403
    resp = make_user("ops", platform_admin=True).post("/internal/webhooks/dispatch", json={"limit": 1})
    assert resp.status == 200, resp
    assert set(resp.body) == {"claimed", "delivered", "retrying", "failed", "disabled"}


# -- the outbox --------------------------------------------------------------------------------


def test_an_event_exists_only_if_its_cause_committed(container, make_org):
    admin, org_id = make_org()
    hook = make_hook(admin, org_id, "https://93.184.216.34/x")
    emitted: list[str | None] = []

    def cause_that_rolls_back() -> None:
        with container.db.transaction() as tx:
            emitted.append(container.webhooks.emit(tx, org_id=org_id, event="run.failed",
                                                   data={"run_id": "r"}).event_id)
            emitted.append(container.webhooks.emit(tx, org_id=org_id, event="run.completed",
                                                   data={"run_id": "r"}).event_id)
            raise RuntimeError("the cause rolls back")

    with pytest.raises(RuntimeError):
        cause_that_rolls_back()
    not_subscribed, event_id = emitted
    assert not_subscribed is None and event_id is not None
    assert db_row(container, "SELECT 1 AS x FROM webhook_events WHERE id = %s", event_id) is None
    committed = emit(container, org_id)
    assert db_row(container, "SELECT count(*) AS n FROM webhook_deliveries WHERE event_id = %s", committed)["n"] == 1
    with pytest.raises(ValueError), container.db.transaction() as tx:
        container.webhooks.emit(tx, org_id=org_id, event="run.exploded", data={})
    # Nothing may try to reach the public address from later tests.
    assert admin.delete(f"/orgs/{org_id}/webhooks/{hook['id']}").status == 204


# -- delivery ----------------------------------------------------------------------------------


def test_a_signed_delivery_reaches_a_real_receiver(loop_container, loop_org, receiver, caplog):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url, ["run.completed", "run.failed"])
    event_id = emit(loop_container, org_id, "run.completed", {"run_id": "run_42", "records": 15000})
    with caplog.at_level(logging.DEBUG):
        report = loop_container.webhooks.deliver_due()
    assert report.delivered >= 1
    req = receiver.wait_for(1)[0]
    assert req.target == "/hooks/in?tenant=t1"
    assert req.headers["webhook-id"] == event_id
    assert req.headers["content-type"] == "application/json"
    payload = verify(hook["secret"], req)
    assert payload["type"] == "run.completed"
    assert payload["data"] == {"run_id": "run_42", "records": 15000}
    assert abs(datetime.fromisoformat(payload["timestamp"]) - datetime.now(UTC)).total_seconds() < 60
    attempts = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"]
    assert len(attempts) == 1
    a = attempts[0]
    assert (a["event_id"], a["event_type"], a["attempt"], a["status_code"], a["error"], a["delivery_status"]) == (
        event_id, "run.completed", 1, 200, None, "delivered")
    assert a["duration_ms"] >= 0 and a["started_at"] <= a["finished_at"] and a["next_attempt_at"] is None

    logged = caplog.text + json.dumps([getattr(r, "fields", None) for r in caplog.records], default=str)
    assert hook["secret"] not in logged and hook["secret"][6:] not in logged
    assert req.headers["webhook-signature"].split(",", 1)[1] not in logged
    assert "tenant=t1" not in logged

    # And the reference implementation agrees.
    assert standardwebhooks.Webhook(hook["secret"]).verify(req.body, req.headers)["type"] == "run.completed"


def test_retries_with_backoff_then_succeeds(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url)
    receiver.answer(500, 503)
    event_id = emit(loop_container, org_id)
    svc = service(loop_container)

    svc.deliver_due()
    first = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"]
    assert [(a["attempt"], a["status_code"], a["delivery_status"]) for a in first] == [(1, 500, "pending")]
    assert first[0]["error"] == "the receiver answered HTTP 500"
    assert first[0]["response_excerpt"] == "receiver says no"
    wait = datetime.fromisoformat(first[0]["next_attempt_at"]) - datetime.fromisoformat(first[0]["finished_at"])
    assert 4 <= wait.total_seconds() <= 6
    svc.deliver_due()  # not due yet: nothing is sent
    assert len(receiver.requests) == 1

    make_due(loop_container, hook["id"])
    svc.deliver_due()
    second = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"]
    wait = datetime.fromisoformat(second[0]["next_attempt_at"]) - datetime.fromisoformat(second[0]["finished_at"])
    assert 29 <= wait.total_seconds() <= 31
    assert second[0]["status_code"] == 503

    make_due(loop_container, hook["id"])
    svc.deliver_due()
    reqs = receiver.wait_for(3)
    assert len(reqs) == 3
    assert {r.headers["webhook-id"] for r in reqs} == {event_id}
    for r in reqs:
        verify(hook["secret"], r)
    history = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"]
    assert [(a["attempt"], a["status_code"]) for a in history] == [(3, 200), (2, 503), (1, 500)]
    assert {a["delivery_status"] for a in history} == {"delivered"}
    assert {a["event_id"] for a in history} == {event_id}

    page = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries", query_string={"limit": 2}).body
    assert [a["attempt"] for a in page["items"]] == [3, 2] and page["next_cursor"]
    rest = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries",
                     query_string={"limit": 2, "cursor": page["next_cursor"]}).body
    assert [a["attempt"] for a in rest["items"]] == [1] and rest["next_cursor"] is None
    full = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries", query_string={"limit": 3}).body
    assert [a["attempt"] for a in full["items"]] == [3, 2, 1] and full["next_cursor"] is None


def test_gives_up_when_the_schedule_runs_out(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url)
    receiver.answer(500, 500, 500, 500)
    emit(loop_container, org_id)
    svc = service(loop_container, schedule=RetrySchedule(delays_seconds=(0, 0), jitter=0))
    for _ in range(3):
        svc.deliver_due()
    history = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"]
    assert [a["attempt"] for a in history] == [3, 2, 1]
    assert {a["delivery_status"] for a in history} == {"failed"}
    svc.deliver_due()
    assert len(receiver.requests) == 3
    assert admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}").body["status"] == "active"


def test_410_disables_the_webhook(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url)
    receiver.answer(410)
    emit(loop_container, org_id)
    svc = service(loop_container)
    svc.deliver_due()
    receiver.wait_for(1)
    got = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}").body
    assert got["status"] == "disabled" and "410" in got["disabled_reason"] and got["disabled_at"]
    attempts = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"]
    assert [(a["status_code"], a["delivery_status"]) for a in attempts] == [(410, "failed")]
    entry = admin.get(f"/orgs/{org_id}/audit", query_string={"action": "webhook.disabled"}).body["items"][0]
    assert (entry["actor"], entry["target"]) == ("system:webhooks", hook["id"])
    assert emit(loop_container, org_id) is None
    svc.deliver_due()
    assert len(receiver.requests) == 1
    assert admin.get(f"/orgs/{org_id}/audit/verify").body["ok"] is True


def test_410_cancels_the_webhooks_other_pending_deliveries(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url)
    receiver.answer(410)
    emit(loop_container, org_id)
    svc = service(loop_container, schedule=RetrySchedule(delays_seconds=(3600,), jitter=0))
    # Park the first event behind the second, then let only the second go first.
    emit(loop_container, org_id)
    with loop_container.db.transaction() as tx:
        tx.execute("UPDATE webhook_deliveries SET next_attempt_at = now() + interval '1 hour' "
                   "WHERE id = (SELECT id FROM webhook_deliveries WHERE webhook_id = %s ORDER BY id LIMIT 1)",
                   hook["id"])
    svc.deliver_due()
    with loop_container.db.read() as tx:
        statuses = sorted(r["status"] for r in tx.fetch_all(
            "SELECT status FROM webhook_deliveries WHERE webhook_id = %s", hook["id"]))
    assert statuses == ["cancelled", "failed"]


def test_events_go_only_to_subscribed_webhooks_of_their_org(loop_container, make_org, loop_app, receiver):
    admin_a, org_a = make_org()
    admin_b, org_b = make_org("Other")
    la, lb = Client(loop_app, admin_a.token), Client(loop_app, admin_b.token)
    # One receiver, told apart by path: which webhook got which event.
    wanted = make_hook(la, org_a, receiver.url.replace("/hooks/in", "/a-completed"), ["run.completed"])
    make_hook(la, org_a, receiver.url.replace("/hooks/in", "/a-failed"), ["run.failed"])
    make_hook(lb, org_b, receiver.url.replace("/hooks/in", "/b-completed"), ["run.completed"])
    event_id = emit(loop_container, org_a, "run.completed")
    service(loop_container).deliver_due()
    time.sleep(0.3)
    reqs = receiver.wait_for(1)
    assert [(r.path, r.headers["webhook-id"]) for r in reqs] == [("/a-completed", event_id)]
    verify(wanted["secret"], reqs[0])
    emit(loop_container, org_b, "run.failed")  # org B has no run.failed subscription
    service(loop_container).deliver_due()
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_an_event_fans_out_to_one_delivery_per_subscribed_webhook(container, make_org):
    admin, org_id = make_org()
    hooks = [make_hook(admin, org_id, f"https://93.184.216.34/{n}", ["run.completed", "run.failed"])
             for n in range(3)]
    other = make_hook(admin, org_id, "https://93.184.216.34/other", ["run.cancelled"])
    before = time.time()
    event_id = emit(container, org_id, "run.failed")
    with container.db.read() as tx:
        rows = tx.fetch_all("SELECT id, webhook_id, org_id, status FROM webhook_deliveries WHERE event_id = %s "
                            "ORDER BY webhook_id", event_id)
    assert sorted(r["webhook_id"] for r in rows) == sorted(h["id"] for h in hooks)
    assert {(r["org_id"], r["status"]) for r in rows} == {(org_id, "pending")}
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 3
    for delivery_id in ids:  # ours: prefix, 26 base32 characters, the event's time
        made = id_time(delivery_id)
        assert delivery_id.startswith("whd_") and made is not None and before - 1 < made < time.time() + 1
    assert emit(container, org_id, "run.completed") != event_id  # a second event, its own deliveries
    for hook in [*hooks, other]:  # nothing may try to reach the public address from later tests
        assert admin.delete(f"/orgs/{org_id}/webhooks/{hook['id']}").status == 204


def test_delivery_connects_to_the_checked_address_and_rechecks_it(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    resolver = TableResolver({"receiver.test": ["127.0.0.1"]})
    svc = service(loop_container, resolver=resolver)
    principal = loop_container.identity.authenticate(admin.token)
    hook = svc.create(principal, org_id, url=f"http://receiver.test:{receiver.port}/in", events=["deployment.ready"])
    emit(loop_container, org_id, "deployment.ready", {"deployment_id": "dep_1"})
    svc.deliver_due()
    req = receiver.wait_for(1)[0]
    # Sent to 127.0.0.1, the address the check approved, while naming the host the URL names.
    assert req.headers["host"] == f"receiver.test:{receiver.port}"
    verify(hook.secret, req)

    # DNS now answers with the metadata address: the attempt is refused without any request.
    resolver.table["receiver.test"] = ["169.254.169.254"]
    emit(loop_container, org_id, "deployment.ready", {"deployment_id": "dep_2"})
    svc.deliver_due()
    latest = admin.get(f"/orgs/{org_id}/webhooks/{hook.id}/deliveries").body["items"][0]
    assert latest["status_code"] is None and latest["delivery_status"] == "pending"
    assert "destination refused" in latest["error"] and "169.254.169.254" in latest["error"]
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url)
    receiver.answer(302, headers={"Location": receiver.url.replace("/hooks/in", "/elsewhere")})
    emit(loop_container, org_id)
    service(loop_container).deliver_due()
    time.sleep(0.3)
    assert [r.path for r in receiver.requests] == ["/hooks/in"]
    attempt = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"][0]
    assert (attempt["status_code"], attempt["delivery_status"]) == (302, "pending")


def test_a_slow_receiver_times_out_and_is_retried(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url)
    receiver.answer(200, delay=1.5)
    emit(loop_container, org_id)
    service(loop_container, timeout=0.5).deliver_due()
    attempt = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"][0]
    assert attempt["status_code"] is None and "timed out" in attempt["error"]
    assert attempt["delivery_status"] == "pending" and attempt["duration_ms"] < 1500


def test_a_closed_port_is_a_failed_attempt(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    url = receiver.url
    receiver.server.close()
    hook = make_hook(admin, org_id, url)
    emit(loop_container, org_id)
    service(loop_container).deliver_due()
    attempt = admin.get(f"/orgs/{org_id}/webhooks/{hook['id']}/deliveries").body["items"][0]
    assert attempt["status_code"] is None and "refused" in attempt["error"]


def test_the_background_dispatcher_delivers(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    hook = make_hook(admin, org_id, receiver.url, ["approval.requested"])
    dispatcher = WebhookDispatcher(service(loop_container), poll_interval=0.05).start()
    try:
        emit(loop_container, org_id, "approval.requested", {"approval_id": "apr_9"})
        req = receiver.wait_for(1)[0]
    finally:
        dispatcher.stop()
    assert verify(hook["secret"], req)["data"] == {"approval_id": "apr_9"}


def test_concurrent_dispatchers_deliver_each_event_once(loop_container, loop_org, receiver):
    admin, org_id = loop_org
    make_hook(admin, org_id, receiver.url)
    events = {emit(loop_container, org_id, data={"n": n}) for n in range(12)}
    svc = service(loop_container)
    threads = [threading.Thread(target=svc.deliver_due, args=(5,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    svc.deliver_due()
    reqs = receiver.wait_for(12)
    time.sleep(0.2)
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(events)
    assert len(reqs) == 12


# -- retention ---------------------------------------------------------------------------------

def test_the_purge_removes_old_finished_history_in_batches_and_keeps_what_waits(container, make_org):
    admin, org_id = make_org()
    hook = make_hook(admin, org_id, "https://93.184.216.34/purge")
    events = [emit(container, org_id) for _ in range(5)]
    assert all(events)
    old, waiting, recent = events[:3], events[3], events[4]
    with container.db.transaction() as tx:
        tx.execute("UPDATE webhook_events SET occurred_at = now() - interval '40 days' WHERE id = ANY(%s)",
                   [*old, waiting])
        tx.execute("UPDATE webhook_deliveries SET status = 'delivered', next_attempt_at = NULL, finished_at = now() "
                   "WHERE event_id = ANY(%s)", old)
    # Batches of one: the purge goes on until a batch comes back short.
    assert container.webhooks.purge(older_than=timedelta(days=30), batch=1) == 3
    with container.db.read() as tx:
        left = {r["id"] for r in tx.fetch_all("SELECT id FROM webhook_events WHERE org_id = %s", org_id)}
        deliveries = tx.fetch_val("SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %s", hook["id"])
    assert left == {waiting, recent}  # a pending delivery keeps its event, however old
    assert deliveries == 2
    assert container.webhooks.purge(older_than=timedelta(days=30)) == 0  # nothing more to do


def test_the_purge_is_a_periodic_platform_job(container):
    from functions.scheduler import platform_jobs

    jobs = {job.name: job for job in platform_jobs(container)}
    assert jobs["webhooks-purge"].every_seconds == 3600.0
    assert isinstance(jobs["webhooks-purge"].run(), int)
