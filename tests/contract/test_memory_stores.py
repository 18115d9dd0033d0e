"""The MemoryStore contract, run against every adapter:

* ``pgvector``: ``PgVectorStore`` on the session's embedded PostgreSQL (row-level security on);
* ``firestore``: ``FirestoreStore`` with the real ``google-cloud-firestore`` client against the
  Firestore emulator (``gcloud emulators firestore start``), which the fixture starts on a free
  loopback port and stops, killing its whole process group. A missing emulator fails these tests.

Vectors are random unit vectors (the contract is about the store, not the embedder).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from support.net import free_port

from shared.kernel.ids import new_id
from shared.memory import Level, Memory, MemoryStore
from shared.memory.adapters.firestore_store import FirestoreStore
from shared.memory.adapters.pgvector_store import PgVectorStore

DIM = 384
T0 = datetime(2026, 5, 1, tzinfo=UTC)
EMB = "minilm-l6-v2"


@pytest.fixture(scope="module")
def firestore_emulator() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}",
                                "--quiet"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Firestore emulator did not start")
            time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(params=["pgvector", "firestore"])
def store(request: pytest.FixtureRequest, container: Any, monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    if request.param == "pgvector":
        return PgVectorStore(container.db)
    host = request.getfixturevalue("firestore_emulator")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    client = firestore.Client(project="memory-contract", credentials=AnonymousCredentials())
    return FirestoreStore(client, root=f"orgs-{new_id('t')}")


@pytest.fixture
def orgs(make_org: Callable[..., tuple[Any, str]]) -> Callable[[int], list[str]]:
    return lambda n: [make_org(f"Contract{i}")[1] for i in range(n)]


def _unit(rng: np.random.Generator) -> list[float]:
    v = rng.standard_normal(DIM)
    return list(v / np.linalg.norm(v))


def _mem(org_id: str, level: Level = Level.SUMMARY, *, expires: datetime | None = T0 + timedelta(days=30),
         namespace: str | None = None, subjects: list[str] | None = None, embedder: str = EMB,
         created: datetime = T0) -> Memory:
    return Memory(id=new_id("mem"), org_id=org_id, level=level, namespace=namespace, subjects=subjects or [],
                  content=f"memory of {org_id}", metadata={"n": 1}, embedder=embedder, created_at=created,
                  expires_at=expires)


def test_search_is_nearest_first_within_the_org_level_and_namespace(store: MemoryStore,
                                                                    orgs: Callable[[int], list[str]]) -> None:
    rng = np.random.default_rng(7)
    mine, theirs = orgs(2)
    target = _unit(rng)
    near = _mem(mine)
    others = [_mem(mine) for _ in range(5)]
    store.add([near, *others], [target, *[_unit(rng) for _ in others]])
    store.add([_mem(theirs)], [target])  # the same vector in another org
    store.add([_mem(mine, Level.EPISODE, expires=T0 + timedelta(days=90))], [target])
    store.add([_mem(mine, Level.KNOWLEDGE, expires=None, namespace="cost_anomalies"),
               _mem(mine, Level.KNOWLEDGE, expires=None, namespace="automation_patterns")], [target, target])
    hits = store.search(mine, level=Level.SUMMARY, vector=target, k=3, now=T0, embedder=EMB)
    assert [h.id for h in hits][:1] == [near.id] and len(hits) == 3
    assert all(h.org_id == mine and h.level == Level.SUMMARY for h in hits)
    assert hits[0].similarity is not None and hits[0].similarity > 0.99
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)  # type: ignore[misc]
    knowledge = store.search(mine, level=Level.KNOWLEDGE, vector=target, k=5, now=T0, embedder=EMB,
                             namespace="cost_anomalies")
    assert [h.namespace for h in knowledge] == ["cost_anomalies"] and knowledge[0].expires_at is None
    assert store.search(mine, level=Level.SUMMARY, vector=target, k=3, now=T0, embedder="another") == []


def test_expired_memories_are_never_returned(store: MemoryStore, orgs: Callable[[int], list[str]]) -> None:
    rng = np.random.default_rng(8)
    (org_id,) = orgs(1)
    v = _unit(rng)
    old = _mem(org_id, expires=T0 + timedelta(days=30))
    store.add([old], [v])
    later = T0 + timedelta(days=30, seconds=1)
    assert [m.id for m in store.search(org_id, level=Level.SUMMARY, vector=v, k=5, now=T0, embedder=EMB)] == [old.id]
    assert store.search(org_id, level=Level.SUMMARY, vector=v, k=5, now=later, embedder=EMB) == []
    assert store.get(org_id, old.id, now=later) is None
    assert store.recent(org_id, level=Level.SUMMARY, limit=5, now=later) == []
    assert store.get(org_id, old.id, now=T0) is not None


def test_get_delete_forget_are_scoped_by_org(store: MemoryStore, orgs: Callable[[int], list[str]]) -> None:
    rng = np.random.default_rng(9)
    mine, theirs = orgs(2)
    a = _mem(mine, subjects=["user:u1"])
    b = _mem(mine, Level.EPISODE, subjects=["user:u1"], expires=T0 + timedelta(days=90))
    c = _mem(theirs, subjects=["user:u1"])
    store.add([a, b], [_unit(rng), _unit(rng)])
    store.add([c], [_unit(rng)])
    assert store.get(theirs, a.id, now=T0) is None
    assert store.delete(theirs, a.id) is False
    assert store.forget_subject(mine, "user:u1") == {2: 1, 4: 1}
    assert store.get(mine, a.id, now=T0) is None
    assert store.get(theirs, c.id, now=T0) is not None
    assert store.delete(theirs, c.id) is True and store.delete(theirs, c.id) is False


def test_gc_deletes_only_expired_in_bounded_batches(store: MemoryStore, orgs: Callable[[int], list[str]]) -> None:
    rng = np.random.default_rng(10)
    (org_id,) = orgs(1)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    expired = [_mem(org_id, expires=long_ago + timedelta(seconds=n)) for n in range(5)]
    live = _mem(org_id, expires=T0 + timedelta(days=1))
    store.add([*expired, live], [_unit(rng) for _ in range(6)])
    cutoff = long_ago + timedelta(days=1)
    first = store.delete_expired(now=cutoff, batch=3)
    second = store.delete_expired(now=cutoff, batch=3)
    assert len(first) == 3 and len(second) == 2 and store.delete_expired(now=cutoff, batch=3) == []
    assert {org for org, _ in first + second} == {org_id}
    assert store.get(org_id, live.id, now=T0) is not None


def test_stale_vectors_are_found_and_replaced(store: MemoryStore, orgs: Callable[[int], list[str]]) -> None:
    rng = np.random.default_rng(11)
    (org_id,) = orgs(1)
    old = _mem(org_id, embedder="old-embedder")
    store.add([old], [_unit(rng)])
    assert org_id in store.orgs_with_stale(embedder=EMB)
    assert store.stale(org_id, embedder=EMB, batch=10) == [(old.id, old.content)]
    v = _unit(rng)
    store.replace_vectors(org_id, embedder=EMB, vectors={old.id: v})
    assert store.stale(org_id, embedder=EMB, batch=10) == []
    hits = store.search(org_id, level=Level.SUMMARY, vector=v, k=1, now=T0, embedder=EMB)
    assert [h.id for h in hits] == [old.id]
