"""Levels 2-4 in PostgreSQL + pgvector (local mode): one ``memories`` table.

Searches: an org below ``hnsw_min_rows`` memories is searched exactly (its rows through the
``(org_id, level)`` btree, every distance computed: exact recall, a few ms for thousands of rows,
and writes that pay no HNSW insertion); ``index_large_orgs`` (run by the memory GC job) gives an
org past that size its own partial HNSW index, which its searches then use (0016_memory_search.sql).

Every statement of an org runs in a transaction that first becomes the ``marketplace_memory``
role and names the org (``enter_org``): row-level security then refuses any row of another org,
and a statement run without an org raises (``memory_org()`` in 0014_memory.sql). Each statement
also filters by its org itself. Only the GC and the re-embed job's scan work across orgs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from psycopg import sql

from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.memory.models import Level, Memory

_Q = Queries("shared.memory")

#: HNSW candidates per search: recall vs speed (pgvector's default is 40).
EF_SEARCH = 100
#: An org with this many memories gets its own HNSW index; below it an exact scan is faster.
HNSW_MIN_ROWS = 20_000
#: The HNSW graph's parameters (pgvector's defaults).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64

_log = logging.getLogger(__name__)


def org_index_name(org_id: str) -> str:
    """The name of an org's partial HNSW index (an org id is not a safe identifier; its hash is)."""
    return "memories_hnsw_" + hashlib.md5(org_id.encode(), usedforsecurity=False).hexdigest()[:20]


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def _memory(row: dict[str, Any]) -> Memory:
    return Memory(**row)


class PgVectorStore:
    """The ``MemoryStore`` port on PostgreSQL + pgvector."""

    def __init__(self, db: Database, *, ef_search: int = EF_SEARCH, hnsw_min_rows: int = HNSW_MIN_ROWS) -> None:
        self.db = db
        self.ef_search = ef_search
        self.hnsw_min_rows = hnsw_min_rows

    @contextmanager
    def _org(self, org_id: str) -> Iterator[Tx]:
        if not org_id:
            raise ValueError("a memory statement needs an org")
        with self.db.transaction() as tx:
            tx.execute(_Q.enter_org, org_id, str(self.ef_search))
            yield tx

    def add(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        orgs = {m.org_id for m in memories}
        if len(orgs) > 1:
            raise ValueError("one org per add")
        if not memories:
            return
        rows = [{"id": m.id, "org_id": m.org_id, "level": int(m.level), "namespace": m.namespace,
                 "subjects": m.subjects, "content": m.content, "metadata": m.metadata, "embedder": m.embedder,
                 "embedding": _literal(vector), "created_at": m.created_at.isoformat(),
                 "expires_at": m.expires_at.isoformat() if m.expires_at else None}
                for m, vector in zip(memories, vectors, strict=True)]
        with self._org(orgs.pop()) as tx:
            tx.defer(_Q.insert_memories, json.dumps(rows))

    def search(self, org_id: str, *, level: Level, vector: Sequence[float], k: int, now: datetime,
               embedder: str, namespace: str | None = None) -> list[Memory]:
        literal = _literal(vector)
        with self._org(org_id) as tx:
            rows = tx.fetch_all(_Q.search, literal, org_id, int(level), namespace, namespace, embedder, now, k)
        return [_memory(row) for row in rows]

    def recent(self, org_id: str, *, level: Level, limit: int, now: datetime) -> list[Memory]:
        with self._org(org_id) as tx:
            rows = tx.fetch_all(_Q.recent, org_id, int(level), now, limit)
        return [_memory(row) for row in rows]

    def get(self, org_id: str, memory_id: str, *, now: datetime) -> Memory | None:
        with self._org(org_id) as tx:
            row = tx.fetch_one(_Q.by_id, org_id, memory_id, now)
        return _memory(row) if row else None

    def delete(self, org_id: str, memory_id: str) -> bool:
        with self._org(org_id) as tx:
            return tx.fetch_one(_Q.delete_memory, org_id, memory_id) is not None

    def forget_subject(self, org_id: str, subject: str) -> dict[int, int]:
        with self._org(org_id) as tx:
            rows = tx.fetch_all(_Q.forget_subject, org_id, subject)
        return {int(row["level"]): int(row["n"]) for row in rows}

    def delete_expired(self, *, now: datetime, batch: int) -> list[tuple[str, int]]:
        with self.db.transaction() as tx:
            rows = tx.fetch_all(_Q.gc_expired, now, batch)
        return [(str(row["org_id"]), int(row["level"])) for row in rows]

    def stale(self, org_id: str, *, embedder: str, batch: int) -> list[tuple[str, str]]:
        with self._org(org_id) as tx:
            rows = tx.fetch_all(_Q.stale_embedder, org_id, embedder, batch)
        return [(str(row["id"]), str(row["content"])) for row in rows]

    def orgs_with_stale(self, *, embedder: str) -> list[str]:
        with self.db.read() as tx:
            return [str(row["org_id"]) for row in tx.fetch_all(_Q.orgs_with_stale_embedder, embedder)]

    def replace_vectors(self, org_id: str, *, embedder: str, vectors: dict[str, Sequence[float]]) -> None:
        with self._org(org_id) as tx:
            for memory_id, vector in vectors.items():
                tx.defer(_Q.reembed, embedder, _literal(vector), org_id, memory_id)

    def maintain(self) -> None:
        self.index_large_orgs()

    def index_large_orgs(self) -> list[str]:
        """Build a partial HNSW index (``WHERE org_id = ...``) for every org holding at least
        ``hnsw_min_rows`` memories that has none yet; the orgs indexed. ``CREATE INDEX
        CONCURRENTLY``: the org's writes go on meanwhile; an index left invalid by a failed build
        is dropped and built again on the next run."""
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.large_orgs, self.hnsw_min_rows)
        built = []
        for row in rows:
            if row["indexed"]:
                continue
            org_id = str(row["org_id"])
            name = sql.Identifier(org_index_name(org_id))
            with self.db.connection() as conn:
                conn.execute(sql.SQL(_Q.drop_org_index).format(index=name))
                conn.execute(sql.SQL(_Q.create_org_index).format(
                    index=name, m=sql.Literal(HNSW_M), ef_construction=sql.Literal(HNSW_EF_CONSTRUCTION),
                    org_id=sql.Literal(org_id)))
            _log.info("memory: built the HNSW index of org %s (%d memories)", org_id, row["n"])
            built.append(org_id)
        if built:
            with self.db.connection() as conn:
                conn.execute(_Q.analyze_memories)
        return built

    def count_without_org(self) -> int:
        """A statement that names no org, run as the RLS-bound role: raises (fails closed). For
        the isolation test and operators checking the wall."""
        with self.db.transaction() as tx:
            tx.execute(_Q.enter_org, "", str(self.ef_search))
            return int(tx.fetch_val(_Q.without_org))
