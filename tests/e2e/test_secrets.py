"""Secrets at rest (SPEC §5): per-org data keys wrapped by the key-encryption key, rotation of
either without downtime, the move from the platform key ring, and secret reads in the audit log.

Every test builds its own ``SecretKeys`` over the shared database with a KEK of its own (key files
in a temporary folder) and a clock it moves by hand, so caches and audit windows are explicit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.http import Recorded, RecordingServer, Reply

from shared.composition import Container
from shared.identity import Principal
from shared.kernel.adapters.aesgcm_secret_box import AesGcmSecretBox
from shared.kernel.errors import Conflict
from shared.kernel.ids import id_time
from shared.kernel.secret_box import SecretBoxError
from shared.secrets import PLATFORM, KekError, SecretKeys, key_version_of
from shared.secrets.adapters.local_kek import LocalKek, add_version
from shared.webhooks import DestinationPolicy, SystemResolver
from shared.webhooks.service import RetrySchedule, WebhookService

LEGACY_KEY = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def secret_keys(container: Container, keys_dir: Path, clock: Clock, **options: Any) -> SecretKeys:
    return SecretKeys(container.db, container.audit, LocalKek(keys_dir, rescan_seconds=0), clock=clock,
                      legacy=AesGcmSecretBox([LEGACY_KEY]), **options)


def key_rows(container: Container, owner: str) -> list[dict[str, Any]]:
    with container.db.read() as tx:
        return tx.fetch_all("SELECT * FROM secret_keys WHERE owner = %s ORDER BY version", owner)


def audit_entries(container: Container, org_id: str, action: str) -> list[dict[str, Any]]:
    return [e.model_dump() for e in container.audit.page(org_id, limit=100, action=action).items]


# -- sealing ------------------------------------------------------------------------------------


def test_each_org_gets_its_own_data_key_stored_only_wrapped(container, make_org, keys_dir, clock) -> None:
    keys = secret_keys(container, keys_dir, clock)
    _, org_a = make_org()
    _, org_b = make_org()
    sealed = keys.seal(org_a, "webhook", "wh_1", b"whsec_plain")
    assert b"whsec_plain" not in sealed and key_version_of(sealed) == 1
    assert keys.open(org_a, "webhook", "wh_1", sealed) == b"whsec_plain"
    keys.seal(org_b, "webhook", "wh_1", b"x")
    [row_a], [row_b] = key_rows(container, org_a), key_rows(container, org_b)
    assert row_a["wrapped_key"] != row_b["wrapped_key"]
    assert row_a["kek_version"] == row_b["kek_version"] == LocalKek(keys_dir).current_version()
    # The KEK's key file never reaches the database; the wrapped key is nonce + key + tag.
    assert len(bytes(row_a["wrapped_key"])) == 12 + 32 + 16


@pytest.mark.parametrize(("owner", "purpose", "subject"), [
    ("other-org", "webhook", "wh_1"), (None, "idempotency", "wh_1"), (None, "webhook", "wh_2")])
def test_a_sealed_value_is_bound_to_its_org_purpose_and_subject(container, make_org, keys_dir, clock,
                                                                 owner, purpose, subject) -> None:
    keys = secret_keys(container, keys_dir, clock)
    _, org_id = make_org()
    _, other = make_org()
    keys.seal(other, "webhook", "wh_1", b"theirs")  # the other org has a key: the binding still refuses
    sealed = keys.seal(org_id, "webhook", "wh_1", b"secret")
    with pytest.raises(SecretBoxError):
        keys.open(other if owner else org_id, purpose, subject, sealed)


def test_tampering_with_a_value_or_a_wrapped_key_is_refused(container, make_org, keys_dir, clock) -> None:
    keys = secret_keys(container, keys_dir, clock)
    _, org_a = make_org()
    _, org_b = make_org()
    sealed = bytearray(keys.seal(org_a, "webhook", "wh_1", b"secret"))
    sealed[-1] ^= 1
    with pytest.raises(SecretBoxError, match="authenticate"):
        keys.open(org_a, "webhook", "wh_1", bytes(sealed))
    with pytest.raises(SecretBoxError, match="malformed"):
        keys.open(org_a, "webhook", "wh_1", b"\x02\x00\x00\x00\x01short")
    with pytest.raises(SecretBoxError, match="does not have"):
        keys.open(org_a, "webhook", "wh_1", b"\x02\x00\x00\x00\x09" + bytes(40))
    # org B's wrapped key copied into org A's row does not unwrap: it is bound to its owner.
    keys.seal(org_b, "webhook", "wh_1", b"x")
    with container.db.transaction() as tx:
        tx.execute("UPDATE secret_keys SET wrapped_key = (SELECT wrapped_key FROM secret_keys WHERE owner = %s "
                   "AND version = 1) WHERE owner = %s AND version = 1", org_b, org_a)
    fresh = secret_keys(container, keys_dir, clock)
    with pytest.raises(SecretBoxError, match="unwrapped"):
        fresh.open(org_a, "webhook", "wh_1", keys.seal(org_a, "webhook", "wh_1", b"y"))


def test_unwrapped_keys_are_cached_briefly(container, make_org, keys_dir, clock) -> None:
    kek = LocalKek(keys_dir)
    calls: list[str] = []

    class Counting:
        def current_version(self) -> str:
            return kek.current_version()

        def wrap(self, key: bytes, *, aad: bytes) -> Any:
            return kek.wrap(key, aad=aad)

        def unwrap(self, ciphertext: bytes, *, kek_version: str, aad: bytes) -> bytes:
            calls.append(kek_version)
            return kek.unwrap(ciphertext, kek_version=kek_version, aad=aad)

    keys = SecretKeys(container.db, container.audit, Counting(), clock=clock, cache_seconds=300)
    _, org_id = make_org()
    sealed = keys.seal(org_id, "webhook", "wh_1", b"s")
    for _ in range(5):
        keys.open(org_id, "webhook", "wh_1", sealed)
    assert len(calls) == 1
    clock.now += 301
    keys.open(org_id, "webhook", "wh_1", sealed)
    assert len(calls) == 2


# -- rotation -----------------------------------------------------------------------------------


def test_rotating_an_orgs_data_key_keeps_old_values_open(container, make_org, keys_dir, clock) -> None:
    keys = secret_keys(container, keys_dir, clock, cache_seconds=60)
    other_process = secret_keys(container, keys_dir, clock, cache_seconds=60)
    _, org_id = make_org()
    old = keys.seal(org_id, "webhook", "wh_1", b"old secret")
    assert other_process.is_current(org_id, old)

    rotated = keys.rotate(org_id, actor="user:usr_admin")
    assert rotated.version == 2
    new = keys.seal(org_id, "webhook", "wh_2", b"new secret")
    assert key_version_of(new) == 2 and not keys.is_current(org_id, old)
    assert keys.open(org_id, "webhook", "wh_1", old) == b"old secret"
    # Another process keeps sealing with version 1 until its cache expires; both open everywhere.
    assert key_version_of(other_process.seal(org_id, "webhook", "wh_3", b"z")) == 1
    assert other_process.open(org_id, "webhook", "wh_2", new) == b"new secret"
    clock.now += 61
    assert key_version_of(other_process.seal(org_id, "webhook", "wh_3", b"z")) == 2
    # A re-seal moves the old value to the newest key.
    resealed = keys.reseal(org_id, "webhook", "wh_1", old)
    assert resealed is not None and key_version_of(resealed) == 2
    assert keys.open(org_id, "webhook", "wh_1", resealed) == b"old secret"
    assert keys.reseal(org_id, "webhook", "wh_1", resealed) is None

    [entry] = audit_entries(container, org_id, "secret.key_rotated")
    assert entry["actor"] == "user:usr_admin" and entry["details"]["version"] == 2
    assert container.audit.verify(org_id).ok


def test_two_rotations_at_once_one_wins(container, make_org, keys_dir, clock, monkeypatch) -> None:
    keys = secret_keys(container, keys_dir, clock)
    _, org_id = make_org()
    keys.seal(org_id, "webhook", "wh_1", b"s")
    # Another rotation inserts version 2 between our read of the newest key and our insert.
    original = keys.kek.wrap

    def racing_wrap(key: bytes, *, aad: bytes) -> Any:
        if b"|2" in aad and len(key_rows(container, org_id)) == 1:
            other = original(key, aad=aad)
            with container.db.transaction() as tx:
                tx.execute("INSERT INTO secret_keys (owner, version, wrapped_key, kek_version) VALUES (%s, 2, %s, %s)",
                           org_id, other.ciphertext, other.kek_version)
        return original(key, aad=aad)

    monkeypatch.setattr(keys.kek, "wrap", racing_wrap)
    with pytest.raises(Conflict):
        keys.rotate(org_id, actor="user:usr_admin")
    assert [r["version"] for r in key_rows(container, org_id)] == [1, 2]


def test_rotating_the_kek_rewraps_data_keys_in_the_background(container, make_org, keys_dir, clock) -> None:
    keys = secret_keys(container, keys_dir, clock)
    _, org_id = make_org()
    sealed = keys.seal(org_id, "webhook", "wh_1", b"secret")
    first = key_rows(container, org_id)[0]["kek_version"]

    second = add_version(keys_dir)  # the rotation: a new key file, the new current version
    assert (id_time(second) or 0) > (id_time(first) or 0)  # ids are not in time order as strings
    # Before the re-wrap, a process that never saw the key opens it through the old KEK version.
    assert secret_keys(container, keys_dir, clock).open(org_id, "webhook", "wh_1", sealed) == b"secret"
    # New owners' keys are wrapped by the new version at once.
    _, new_org = make_org()
    keys.seal(new_org, "webhook", "wh_1", b"x")
    assert key_rows(container, new_org)[0]["kek_version"] == second

    done = keys.rewrap(limit=100_000)
    assert done.kek_version == second and done.rewrapped >= 1
    assert key_rows(container, org_id)[0]["kek_version"] == second
    assert key_rows(container, org_id)[0]["rewrapped_at"] is not None
    assert keys.rewrap(limit=100_000).rewrapped == 0
    # Once every key is re-wrapped the old key file can go: everything still opens.
    (keys_dir / f"kek-{first}.key").unlink()
    assert secret_keys(container, keys_dir, clock).open(org_id, "webhook", "wh_1", sealed) == b"secret"


def test_a_kek_version_that_is_gone_fails_clearly(keys_dir) -> None:
    kek = LocalKek(keys_dir)
    wrapped = kek.wrap(b"k" * 32, aad=b"dek|x")
    with pytest.raises(KekError, match="no key-encryption key"):
        kek.unwrap(wrapped.ciphertext, kek_version="kek_missing", aad=b"dek|x")
    with pytest.raises(KekError, match="authenticate"):
        kek.unwrap(wrapped.ciphertext, kek_version=wrapped.kek_version, aad=b"dek|y")


# -- webhooks: legacy values, background re-seal, audited reads -----------------------------------


@pytest.fixture
def receiver() -> Iterator[RecordingServer]:
    server = RecordingServer(lambda _request: Reply(200, {"ok": True}))
    yield server
    server.close()


def webhook_service(container: Container, keys: SecretKeys) -> WebhookService:
    return WebhookService(container.db, container.audit, keys, DestinationPolicy(SystemResolver(), allow_loopback=True),
                          schedule=RetrySchedule(jitter=0), timeout_seconds=5)


def signing_key_of(request: Recorded, secret: str) -> bool:
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return f"v1,{expected}" in request.headers["webhook-signature"].split(" ")


def deliver(container: Container, hooks: WebhookService, org_id: str, webhook_id: str) -> None:
    with container.db.transaction() as tx:
        hooks.emit(tx, org_id=org_id, event="run.completed", data={"run_id": "run_1"})
        tx.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE webhook_id = %s "
                   "AND status = 'pending'", webhook_id)
    hooks.deliver_due(1000)


def test_legacy_sealed_webhook_secrets_still_sign_and_are_resealed(container, make_org, keys_dir, clock,
                                                                   receiver) -> None:
    keys = secret_keys(container, keys_dir, clock)
    hooks = webhook_service(container, keys)
    _, org_id = make_org()
    created = hooks.create(Principal(kind="user", subject="usr_admin"), org_id, url=f"{receiver.url}/in",
                           events=["run.completed"])
    # As the platform key ring sealed it before this change.
    legacy = AesGcmSecretBox([LEGACY_KEY]).seal(created.secret.encode(), context=f"webhook:{created.id}")
    with container.db.transaction() as tx:
        tx.execute("UPDATE webhooks SET secret_sealed = %s WHERE id = %s", legacy, created.id)

    deliver(container, hooks, org_id, created.id)
    [request] = receiver.wait_for(1)
    assert signing_key_of(request, created.secret)

    assert hooks.reseal_secrets(limit=100_000) >= 1
    with container.db.read() as tx:
        sealed = bytes(tx.fetch_val("SELECT secret_sealed FROM webhooks WHERE id = %s", created.id))
    assert sealed[:1] == b"\x02" and keys.is_current(org_id, sealed)
    deliver(container, hooks, org_id, created.id)
    assert signing_key_of(receiver.wait_for(2)[1], created.secret)

    # After a rotation of the org's key the job moves the secret again; deliveries never stop.
    keys.rotate(org_id, actor="user:usr_admin")
    deliver(container, hooks, org_id, created.id)
    assert signing_key_of(receiver.wait_for(3)[2], created.secret)
    assert hooks.reseal_secrets(limit=100_000) >= 1
    with container.db.read() as tx:
        sealed = bytes(tx.fetch_val("SELECT secret_sealed FROM webhooks WHERE id = %s", created.id))
    assert key_version_of(sealed) == 2


def test_signing_a_delivery_is_an_audited_secret_read_without_flooding(container, make_org, keys_dir, clock,
                                                                        receiver) -> None:
    keys = secret_keys(container, keys_dir, clock, read_audit_seconds=3600)
    hooks = webhook_service(container, keys)
    _, org_id = make_org()
    created = hooks.create(Principal(kind="user", subject="usr_admin"), org_id, url=f"{receiver.url}/in",
                           events=["run.completed"])
    for _ in range(3):
        deliver(container, hooks, org_id, created.id)
    receiver.wait_for(3)
    [entry] = audit_entries(container, org_id, "secret.read")
    assert entry["actor"] == "system:webhooks" and entry["target"] == created.id
    assert entry["details"] == {"purpose": "webhook", "key_version": 1, "reads": 1}
    assert created.secret not in json.dumps(entry, default=str)

    clock.now += 3601  # the next read after the window is audited with the reads in between
    deliver(container, hooks, org_id, created.id)
    receiver.wait_for(4)
    entries = audit_entries(container, org_id, "secret.read")
    assert len(entries) == 2 and entries[0]["details"]["reads"] == 3
    assert container.audit.verify(org_id).ok


def test_internal_opens_are_not_audited(container, make_org, keys_dir, clock) -> None:
    keys = secret_keys(container, keys_dir, clock, read_audit_seconds=0)
    _, org_id = make_org()
    sealed = keys.seal(org_id, "webhook", "wh_1", b"s")
    keys.open(org_id, "webhook", "wh_1", sealed)
    keys.reseal(org_id, "webhook", "wh_1", sealed)
    assert audit_entries(container, org_id, "secret.read") == []
    keys.open(org_id, "webhook", "wh_1", sealed, reader="system:webhooks")
    keys.open(org_id, "webhook", "wh_1", sealed, reader="system:webhooks")
    assert len(audit_entries(container, org_id, "secret.read")) == 2  # a zero window audits every read


# -- idempotent replays -------------------------------------------------------------------------


def test_replays_are_sealed_with_the_orgs_key_and_legacy_replays_still_play(admin_and_org, container) -> None:
    admin, org_id = admin_and_org
    first = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "ci", "role": "viewer"},
                       headers={"Idempotency-Key": "k-1"})
    assert first.status == 201
    with container.db.read() as tx:
        row = tx.fetch_one("SELECT scope, response_sealed FROM idempotency_keys WHERE key = 'k-1' "
                           "AND path = %s", f"/orgs/{org_id}/api-keys")
    sealed = bytes(row["response_sealed"])
    assert sealed[:1] == b"\x02" and first.body["key"].encode() not in sealed
    scope = row["scope"]
    subject = f"{len(scope)}:{scope}:k-1"
    assert json.loads(container.secrets.open(org_id, "idempotency", subject, sealed))["key"] == first.body["key"]
    with pytest.raises(SecretBoxError):
        container.secrets.open(PLATFORM, "idempotency", subject, sealed)

    # A replay stored by the platform key ring before the change still replays (local mode keeps
    # reading its old ring from keys/; here the container's legacy ring is given one).
    legacy = AesGcmSecretBox([LEGACY_KEY])
    container.secrets.legacy, before = legacy, container.secrets.legacy
    try:
        with container.db.transaction() as tx:
            tx.execute("UPDATE idempotency_keys SET response_sealed = %s WHERE scope = %s AND key = 'k-1'",
                       legacy.seal(json.dumps(first.body).encode(), context=f"idempotency:{subject}"), scope)
        again = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "ci", "role": "viewer"},
                           headers={"Idempotency-Key": "k-1"})
    finally:
        container.secrets.legacy = before
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.body == first.body


@pytest.fixture
def admin_and_org(make_org) -> tuple[Any, str]:
    return make_org()


# -- the operation ------------------------------------------------------------------------------


def test_an_admin_rotates_the_orgs_key_through_the_api(admin_and_org, member, container) -> None:
    admin, org_id = admin_and_org
    sealed = container.secrets.seal(org_id, "webhook", "wh_api", b"s")
    resp = admin.post(f"/orgs/{org_id}/secret-keys/rotate")
    assert resp.status == 200 and resp.body == {"owner": org_id, "version": key_version_of(sealed) + 1}
    assert container.secrets.open(org_id, "webhook", "wh_api", sealed) == b"s"
    assert key_version_of(container.secrets.seal(org_id, "webhook", "wh_api", b"s")) == resp.body["version"]
    [entry] = audit_entries(container, org_id, "secret.key_rotated")
    assert entry["target"] == f"{org_id}/keys/{resp.body['version']}"
    developer = member(admin, org_id, "developer")
    denied = developer.post(f"/orgs/{org_id}/secret-keys/rotate")
    assert denied.status == 403 and denied.body["error"]["code"] == "forbidden"


def test_rotate_kek_rewraps_everything_at_once(container, make_org, keys_dir, clock) -> None:
    keys = secret_keys(container, keys_dir, clock)
    _, org_id = make_org()
    sealed = keys.seal(org_id, "webhook", "wh_1", b"secret")
    before = key_rows(container, org_id)[0]["kek_version"]
    done = keys.rotate_kek()
    assert done.kek_version != before and done.rewrapped >= 1
    assert key_rows(container, org_id)[0]["kek_version"] == done.kek_version
    assert secret_keys(container, keys_dir, clock).open(org_id, "webhook", "wh_1", sealed) == b"secret"


def test_the_cli_rotates_the_local_kek(container, make_org, settings, database_url, monkeypatch, capsys) -> None:
    from functions.cli import main

    _, org_id = make_org()
    sealed = container.secrets.seal(org_id, "webhook", "wh_cli", b"secret")
    monkeypatch.setenv("MARKETPLACE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MARKETPLACE_DATABASE_URL", database_url)
    assert main(["rotate-kek"]) == 0
    versions = [p.name.removeprefix("kek-").removesuffix(".key") for p in settings.keys_dir.glob("kek-*.key")]
    newest = max(versions, key=lambda version: id_time(version) or 0.0)  # by time: ids do not sort as text
    assert f"key-encryption key {newest}:" in capsys.readouterr().out
    assert key_rows(container, org_id)[0]["kek_version"] == newest
    fresh = SecretKeys(container.db, container.audit, LocalKek(settings.keys_dir))
    assert fresh.open(org_id, "webhook", "wh_cli", sealed) == b"secret"


def test_the_newest_kek_file_is_current_by_time_not_by_text(tmp_path):
    """Key ids do not sort by time as text: after every rotation the new version is the current one."""
    kek = LocalKek(tmp_path / "keys", rescan_seconds=0)
    for _ in range(30):
        assert kek.rotate() == kek.current_version()


def test_a_stored_response_that_no_longer_opens_is_forgotten_and_the_request_runs(container):
    store, scope, key = container.idempotency, "user:usr_replay_test", f"k-{id(container)}-{time.time_ns()}"
    assert store.begin(scope, key, "POST", "/orgs", "h") is None
    store.complete(scope, key, 201, {"id": "org_x"})
    assert store.begin(scope, key, "POST", "/orgs", "h").body == {"id": "org_x"}  # replayed
    with container.db.transaction() as tx:
        tx.execute("UPDATE idempotency_keys SET response_sealed = %s WHERE scope = %s AND key = %s",
                   b"\x01not-a-sealed-value", scope, key)
    assert store.begin(scope, key, "POST", "/orgs", "h") is None  # claimed anew: the request runs again
