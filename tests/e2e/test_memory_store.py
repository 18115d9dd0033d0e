"""Memory Levels 2-4 on PostgreSQL + pgvector: isolation (store filter + RLS), TTLs, GC, forgetting."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from shared.composition import Container
from shared.kernel.db.database import QueryError
from shared.kernel.ids import new_id
from shared.memory import Level, Memory, MemoryService, NewMemory
from shared.memory.adapters.pgvector_store import PgVectorStore

DIM = 384
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _unit(rng: np.random.Generator) -> list[float]:
    v = rng.standard_normal(DIM)
    return list(v / np.linalg.norm(v))


def _memory(org_id: str, level: Level = Level.SUMMARY, *, content: str = "x", created: datetime = T0,
            expires: datetime | None = None, embedder: str = "minilm-l6-v2", subjects: list[str] | None = None,
            namespace: Any = None) -> Memory:
    return Memory(id=new_id("mem"), org_id=org_id, level=level, namespace=namespace, subjects=subjects or [],
                  content=content, embedder=embedder, created_at=created, expires_at=expires)


@pytest.fixture
def orgs(make_org: Callable[..., tuple[Any, str]]) -> Callable[[int], list[str]]:
    return lambda n: [make_org(f"Mem{i}")[1] for i in range(n)]


@pytest.fixture
def store(container: Container) -> PgVectorStore:
    return PgVectorStore(container.db)


def test_a_thousand_random_searches_across_twenty_orgs_return_nothing_foreign(
        store: PgVectorStore, orgs: Callable[[int], list[str]]) -> None:
    rng = np.random.default_rng(17)
    org_ids = orgs(20)
    owner: dict[str, str] = {}
    for org_id in org_ids:
        levels = [Level(int(level)) for level in rng.choice([2, 3, 4], size=30)]
        memories = [_memory(org_id, level, content=f"{org_id} fact {n}", expires=T0 + timedelta(days=365),
                            namespace="cost_anomalies" if level == Level.KNOWLEDGE else None)
                    for n, level in enumerate(levels)]
        store.add(memories, [_unit(rng) for _ in memories])
        owner.update({m.id: org_id for m in memories})
    foreign = returned = 0
    for _ in range(1000):
        org_id = random.Random(int(rng.integers(1 << 30))).choice(org_ids)
        level = Level(int(rng.choice([2, 3, 4])))
        hits = store.search(org_id, level=level, vector=_unit(rng), k=10, now=T0, embedder="minilm-l6-v2")
        returned += len(hits)
        foreign += sum(1 for h in hits if owner.get(h.id) != org_id or h.org_id != org_id)
    assert returned > 1000  # the searches did find things
    assert foreign == 0


def test_row_level_security_refuses_a_query_without_an_org(store: PgVectorStore,
                                                           orgs: Callable[[int], list[str]]) -> None:
    (org_id,) = orgs(1)
    store.add([_memory(org_id)], [_unit(np.random.default_rng(1))])
    with pytest.raises(QueryError, match="memory query without an org"):
        store.count_without_org()
    with pytest.raises(ValueError, match="needs an org"):
        store.search("", level=Level.SUMMARY, vector=[0.0] * DIM, k=3, now=T0, embedder="minilm-l6-v2")


def test_row_level_security_hides_other_orgs_even_without_the_org_filter(
        container: Container, store: PgVectorStore, orgs: Callable[[int], list[str]]) -> None:
    mine, theirs = orgs(2)
    rng = np.random.default_rng(2)
    store.add([_memory(mine)], [_unit(rng)])
    store.add([_memory(theirs), _memory(theirs)], [_unit(rng), _unit(rng)])
    enter = ("SELECT set_config('role', 'marketplace_memory', true), "
             "set_config('marketplace.memory_org', %s, true)")
    with container.db.transaction() as tx:  # the RLS-bound role, named org, a statement with no org filter
        tx.execute(enter, mine)
        seen = {row["org_id"] for row in tx.fetch_all("SELECT org_id FROM memories")}
        assert seen == {mine}

    def move_to_another_org() -> None:
        with container.db.transaction() as tx:
            tx.execute(enter, mine)
            tx.execute("UPDATE memories SET org_id = %s WHERE org_id = %s", theirs, mine)

    with pytest.raises(QueryError, match="row-level security"):  # nor can it move a row to another org
        move_to_another_org()


def test_an_expired_memory_is_never_returned_even_before_the_gc(container: Container,
                                                                orgs: Callable[[int], list[str]]) -> None:
    (org_id,) = orgs(1)
    now = [T0]
    service = MemoryService(container.db, PgVectorStore(container.db), container.memory.embedder,  # type: ignore[union-attr]
                            container.audit, preferences=lambda _org: {}, clock=lambda: now[0])
    summary, episode = service.remember(org_id, [
        NewMemory(level=Level.SUMMARY, content="the nightly batch cost doubled", subjects=["agent:cost-anomaly"]),
        NewMemory(level=Level.EPISODE, content="proposed deleting idle disks; approved"),
    ])
    assert summary.expires_at == T0 + timedelta(days=30)
    assert episode.expires_at == T0 + timedelta(days=90)

    def found(level: int, query: str) -> list[str]:
        return [m.id for m in service.search(org_id, level=level, query=query, k=5).items]

    now[0] = T0 + timedelta(days=30)
    assert found(2, "batch cost") == []  # expires_at > now: at exactly 30 days it has expired
    now[0] = T0 + timedelta(days=29, hours=23, minutes=59, seconds=59)
    assert found(2, "batch cost") == [summary.id]
    now[0] = T0 + timedelta(days=30, seconds=1)
    assert found(2, "batch cost") == []
    with pytest.raises(Exception, match="no such memory"):
        service.get(org_id, summary.id)
    assert found(4, "idle disks") == [episode.id]
    now[0] = T0 + timedelta(days=90, seconds=1)
    assert found(4, "idle disks") == []


def test_gc_deletes_expired_memories_in_bounded_batches_concurrently(container: Container,
                                                                    orgs: Callable[[int], list[str]]) -> None:
    org_ids = orgs(3)
    rng = np.random.default_rng(3)
    store = PgVectorStore(container.db)
    keep = []
    for org_id in org_ids:
        expired = [_memory(org_id, expires=T0 - timedelta(seconds=1)) for _ in range(40)]
        live = [_memory(org_id, expires=T0 + timedelta(days=1)), _memory(org_id, Level.KNOWLEDGE,
                                                                         namespace="cost_anomalies")]
        store.add(expired + live, [_unit(rng) for _ in range(42)])
        keep += [m.id for m in live]
    from shared.memory import MemorySettings

    service = MemoryService(container.db, store, container.memory.embedder, container.audit,  # type: ignore[union-attr]
                            preferences=lambda _org: {}, clock=lambda: T0,
                            settings=MemorySettings(gc_batch=7))
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(service.gc().deleted)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) >= 120  # other tests' expired rows may be reclaimed too; none twice
    assert service.gc().deleted == 0  # repeated: nothing more
    for org_id in org_ids:
        left = {m.id for level in (Level.SUMMARY, Level.KNOWLEDGE)
                for m in store.recent(org_id, level=level, limit=100, now=T0)}
        assert left == {k for k in keep if k in left} and len(left) == 2


def test_forgetting_a_subject_deletes_it_across_levels_of_that_org_only(container: Container,
                                                                        orgs: Callable[[int], list[str]]) -> None:
    mine, theirs = orgs(2)
    memory = container.memory
    assert memory is not None
    subject = "resource:projects/p/instances/vm-1"
    memory.remember(mine, [NewMemory(level=Level.SUMMARY, content="vm-1 idle", subjects=[subject]),
                           NewMemory(level=Level.EPISODE, content="stopped vm-1", subjects=[subject]),
                           NewMemory(level=Level.SUMMARY, content="unrelated")])
    memory.remember(theirs, [NewMemory(level=Level.SUMMARY, content="vm-1 idle", subjects=[subject])])
    out = memory.forget(mine, subject, actor="user:test")
    assert out.deleted == {"2": 1, "4": 1}
    assert [m.content for m in memory.search(mine, level=2, query="vm-1 idle").items] == ["unrelated"]
    assert [m.content for m in memory.search(theirs, level=2, query="vm-1 idle").items] == ["vm-1 idle"]


def test_a_changed_embedder_never_mixes_spaces_and_the_job_reembeds(container: Container,
                                                                   orgs: Callable[[int], list[str]]) -> None:
    (org_id,) = orgs(1)
    store = PgVectorStore(container.db)
    memory = container.memory
    assert memory is not None
    old = _memory(org_id, content="the old space", embedder="some-older-embedder",
                  expires=datetime.now(UTC) + timedelta(days=1))
    store.add([old], [_unit(np.random.default_rng(4))])
    assert memory.search(org_id, level=2, query="the old space").items == []  # another space: not compared
    assert memory.reembed() >= 1
    hits = memory.search(org_id, level=2, query="the old space").items
    assert [h.id for h in hits] == [old.id] and hits[0].embedder == memory.embedder.name
    assert (hits[0].similarity or 0) > 0.99


def test_a_large_org_gets_its_own_hnsw_index_which_its_searches_use(container: Container,
                                                                    orgs: Callable[[int], list[str]]) -> None:
    """Below the threshold an org is searched exactly; past it, the GC job's maintenance builds the
    org's partial HNSW index, the planner uses it for that org only, and answers stay the org's."""
    from shared.memory.adapters.pgvector_store import _Q, org_index_name

    store = PgVectorStore(container.db, hnsw_min_rows=1500)
    rng = np.random.default_rng(21)
    big, small = orgs(2)
    vectors = [_unit(rng) for _ in range(2000)]
    mems = [_memory(big, expires=T0 + timedelta(days=30)) for _ in vectors]
    store.add(mems, vectors)
    store.add([_memory(small, expires=T0 + timedelta(days=30)) for _ in range(10)], [_unit(rng) for _ in range(10)])
    assert store.index_large_orgs() == [big]
    assert store.index_large_orgs() == []  # built once
    name = org_index_name(big)

    def plan(org_id: str) -> str:
        """The plan of the store's own search statement, as it runs it, with sorting priced out:
        whether the org's partial index can serve it (predicate and ordering match). Which of the
        index and the exact scan is cheaper for a few thousand rows is the planner's choice."""
        with container.db.transaction() as tx:
            tx.execute(_Q.enter_org, org_id, "100")
            tx.execute("SELECT set_config('enable_sort', 'off', true)")
            literal = "[" + ",".join(str(x) for x in vectors[0]) + "]"
            rows = tx.fetch_all("EXPLAIN " + _Q.search, literal, org_id, 2, None, None, "minilm-l6-v2", T0, 10)
        return "\n".join(str(next(iter(r.values()))) for r in rows)

    assert name in plan(big) and name not in plan(small)
    hits = store.search(big, level=Level.SUMMARY, vector=vectors[7], k=10, now=T0, embedder="minilm-l6-v2")
    assert hits[0].id == mems[7].id and len(hits) == 10 and {h.org_id for h in hits} == {big}
    with container.db.transaction() as tx:  # the same search through the HNSW index
        tx.execute(_Q.enter_org, big, "100")
        tx.execute("SELECT set_config('enable_sort', 'off', true)")
        literal = "[" + ",".join(str(x) for x in vectors[7]) + "]"
        rows = tx.fetch_all(_Q.search, literal, big, 2, None, None, "minilm-l6-v2", T0, 10)
    assert [r["id"] for r in rows][:1] == [mems[7].id] and len({r["id"] for r in rows} & {h.id for h in hits}) >= 9
    assert store.search(big, level=Level.EPISODE, vector=vectors[7], k=10, now=T0, embedder="minilm-l6-v2") == []
    assert store.search(big, level=Level.SUMMARY, vector=vectors[7], k=5, now=T0 + timedelta(days=31),
                        embedder="minilm-l6-v2") == []
