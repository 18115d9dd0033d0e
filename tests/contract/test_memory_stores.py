"""The MemoryStore contract, run against every adapter:

* ``pgvector``: ``PgVectorStore`` on the session's embedded PostgreSQL (row-level security on);
* ``firestore``: ``FirestoreStore`` with the real ``google-cloud-firestore`` client against the
  Firestore emulator (``gcloud emulators firestore start``), which the fixture starts on a free
  loopback port and stops, killing its whole process group. A missing emulator fails these tests;
* ``vertex``: ``VertexVectorSearchStore`` (gcp's Level 3) with the real ``google-cloud-aiplatform``
  clients over their REST transports to ``FakeVectorSearch`` (tests/support/vector_search.py: restricts,
  numeric restricts, exact neighbours by the index's distance), documents in the Firestore emulator.
  Here it serves the vectors of every level, so every search of the suite goes through Vector Search.

Vectors are random unit vectors (the contract is about the store, not the embedder).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from support.vector_search import FakeVectorSearch
from support.wait import wait_until

from shared.kernel.ids import new_id
from shared.kernel.net import free_port
from shared.memory import Level, Memory, MemoryStore
from shared.memory.adapters.firestore_store import FirestoreStore
from shared.memory.adapters.pgvector_store import PgVectorStore
from shared.memory.adapters.vertex_vector_store import VertexVectorSearchStore

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
        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the Firestore emulator exited with {process.returncode}")
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=90, interval=0.3, what="the Firestore emulator")
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


INDEX = "projects/memory-contract/locations/europe-west4/indexes/memories"
ENDPOINT = "projects/memory-contract/locations/europe-west4/indexEndpoints/memories"


@pytest.fixture
def vector_search() -> Iterator[FakeVectorSearch]:
    fake = FakeVectorSearch(index=INDEX, index_endpoint=ENDPOINT, deployed_index_id="memories_v1", dimensions=DIM)
    yield fake
    fake.close()


@pytest.fixture(params=["pgvector", "firestore", "vertex"])
def store(request: pytest.FixtureRequest, container: Any, monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    if request.param == "pgvector":
        return PgVectorStore(container.db)
    host = request.getfixturevalue("firestore_emulator")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    client = firestore.Client(project="memory-contract", credentials=AnonymousCredentials())
    documents = FirestoreStore(client, root=f"orgs-{new_id('t')}")
    if request.param == "firestore":
        return documents
    from google.cloud.aiplatform_v1.services.index_service.transports.rest import IndexServiceRestTransport
    from google.cloud.aiplatform_v1.services.match_service.transports.rest import MatchServiceRestTransport

    fake: FakeVectorSearch = request.getfixturevalue("vector_search")
    return VertexVectorSearchStore(
        documents, index=INDEX, index_endpoint=ENDPOINT, deployed_index_id="memories_v1", location="europe-west4",
        levels=(Level.SUMMARY, Level.KNOWLEDGE, Level.EPISODE),
        index_transport=IndexServiceRestTransport(host=fake.host, url_scheme="http",
                                                  credentials=AnonymousCredentials()),
        match_transport=MatchServiceRestTransport(host=fake.host, url_scheme="http",
                                                  credentials=AnonymousCredentials()))


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


def test_vertex_queries_carry_the_org_restricts_and_fail_closed(request: pytest.FixtureRequest,
                                                              orgs: Callable[[int], list[str]],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Vertex only: the index itself filters by org (restricts), not only the documents read after;
    an org-less search raises before any request; levels outside ``levels`` stay in Firestore."""
    host = request.getfixturevalue("firestore_emulator")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore
    from google.cloud.aiplatform_v1.services.index_service.transports.rest import IndexServiceRestTransport
    from google.cloud.aiplatform_v1.services.match_service.transports.rest import MatchServiceRestTransport

    fake: FakeVectorSearch = request.getfixturevalue("vector_search")
    documents = FirestoreStore(firestore.Client(project="memory-contract", credentials=AnonymousCredentials()),
                               root=f"orgs-{new_id('t')}")
    store = VertexVectorSearchStore(
        documents, index=INDEX, index_endpoint=ENDPOINT, deployed_index_id="memories_v1",
        index_transport=IndexServiceRestTransport(host=fake.host, url_scheme="http", credentials=AnonymousCredentials()),
        match_transport=MatchServiceRestTransport(host=fake.host, url_scheme="http", credentials=AnonymousCredentials()))
    rng = np.random.default_rng(12)
    mine, theirs = orgs(2)
    v = _unit(rng)
    doc = _mem(mine, Level.KNOWLEDGE, expires=None, namespace="cost_anomalies")
    store.add([doc, _mem(mine)], [v, v])  # the L2 memory stays out of the index (levels: L3 only)
    store.add([_mem(theirs, Level.KNOWLEDGE, expires=None, namespace="cost_anomalies")], [v])
    assert doc.id in fake.datapoints and len(fake.datapoints) == 2
    point = fake.datapoints[doc.id]
    assert {r["namespace"]: r["allowList"] for r in point["restricts"]} == {
        "org_id": [mine], "level": ["3"], "embedder": [EMB], "namespace": ["cost_anomalies"]}
    hits = store.search(mine, level=Level.KNOWLEDGE, vector=v, k=5, now=T0, embedder=EMB, namespace="cost_anomalies")
    assert [h.id for h in hits] == [doc.id] and hits[0].similarity is not None and hits[0].similarity > 0.99
    [query] = [r for r in fake.server.received() if r.path.endswith(":findNeighbors")]
    sent = query.json()["queries"][0]["datapoint"]
    assert {"namespace": "org_id", "allowList": [mine]} in sent["restricts"]
    assert sent["numericRestricts"][0]["namespace"] == "expires_at"
    # The index alone (no document read) answers only the org's datapoint.
    assert len(fake._query(query.json()["queries"][0])["neighbors"]) == 1
    before = len(fake.server.received())
    with pytest.raises(ValueError, match="needs an org"):
        store.search("", level=Level.KNOWLEDGE, vector=v, k=5, now=T0, embedder=EMB)
    assert len(fake.server.received()) == before
    assert [h.level for h in store.search(mine, level=Level.SUMMARY, vector=v, k=5, now=T0, embedder=EMB)] == [2]
    assert len(fake.server.received()) == before  # L2 searched by Firestore
    assert store.delete(mine, doc.id) is True and doc.id not in fake.datapoints
