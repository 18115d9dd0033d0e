"""Levels 2-4 in Firestore (gcp mode), with Firestore's vector search (``find_nearest``).

Layout: ``orgs/{org_id}/memories/{memory_id}``: each org's memories are a subcollection under the
org's document, so every read and write of an org names its path, and no query of one org can
reach another's (the GC and the re-embed scan, platform jobs, use collection-group queries).
Fields: ``level``, ``namespace``, ``subjects`` (array), ``content``, ``metadata`` (map),
``embedder``, ``embedding`` (a Firestore ``Vector``), ``created_at``, ``expires_at`` (a memory
that never expires holds ``NEVER``, so one range filter serves every level).

A vector query pre-filters by level, namespace and embedder (equality: what a composite vector
index serves) and over-fetches; expired memories are dropped before answering, so none is ever
returned, whatever the GC has done. The composite vector index on (level, embedder, embedding)
is declared in terraform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.base_vector_query import DistanceMeasure
from google.cloud.firestore_v1.vector import Vector

from shared.memory.models import Level, Memory

NEVER = datetime(9999, 12, 31, tzinfo=UTC)
_OVERFETCH = 4
_MAX_NEAREST = 1000  # Firestore's limit on find_nearest


class FirestoreStore:
    """The ``MemoryStore`` port on Firestore."""

    def __init__(self, client: firestore.Client | Callable[[], firestore.Client], *, root: str = "orgs") -> None:
        # A factory is called on first use: building the container needs no Google credentials.
        self._client = client if isinstance(client, firestore.Client) else None
        self._factory = None if isinstance(client, firestore.Client) else client
        self.root = root

    @property
    def client(self) -> firestore.Client:
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    def _memories(self, org_id: str) -> Any:
        if not org_id or "/" in org_id:
            raise ValueError("a memory statement needs an org")
        return self.client.collection(self.root).document(org_id).collection("memories")

    @staticmethod
    def _memory(org_id: str, doc: Any, similarity: float | None = None) -> Memory:
        data = doc.to_dict()
        expires = data.get("expires_at")
        return Memory(id=doc.id, org_id=org_id, level=Level(data["level"]), namespace=data.get("namespace"),
                      subjects=list(data.get("subjects") or []), content=data["content"],
                      metadata=dict(data.get("metadata") or {}), embedder=data["embedder"],
                      created_at=data["created_at"],
                      expires_at=None if expires is None or expires >= NEVER else expires, similarity=similarity)

    def add(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        batch = self.client.batch()
        for memory, vector in zip(memories, vectors, strict=True):
            batch.set(self._memories(memory.org_id).document(memory.id), {
                "level": int(memory.level), "namespace": memory.namespace, "subjects": list(memory.subjects),
                "content": memory.content, "metadata": dict(memory.metadata), "embedder": memory.embedder,
                "embedding": Vector([float(x) for x in vector]), "created_at": memory.created_at,
                "expires_at": memory.expires_at or NEVER})
        batch.commit()

    def search(self, org_id: str, *, level: Level, vector: Sequence[float], k: int, now: datetime,
               embedder: str, namespace: str | None = None) -> list[Memory]:
        query = (self._memories(org_id).where(filter=FieldFilter("level", "==", int(level)))
                 .where(filter=FieldFilter("embedder", "==", embedder)))
        if namespace is not None:
            query = query.where(filter=FieldFilter("namespace", "==", namespace))
        nearest = query.find_nearest(vector_field="embedding", query_vector=Vector([float(x) for x in vector]),
                                     distance_measure=DistanceMeasure.COSINE,
                                     limit=min(k * _OVERFETCH, _MAX_NEAREST), distance_result_field="_distance")
        out: list[Memory] = []
        for doc in nearest.get():
            data = doc.to_dict()
            if data["expires_at"] <= now:
                continue
            out.append(self._memory(org_id, doc, 1.0 - float(data["_distance"])))
            if len(out) == k:
                break
        return out

    def recent(self, org_id: str, *, level: Level, limit: int, now: datetime) -> list[Memory]:
        query = (self._memories(org_id).where(filter=FieldFilter("level", "==", int(level)))
                 .where(filter=FieldFilter("expires_at", ">", now))
                 .order_by("expires_at").order_by("created_at", direction=firestore.Query.DESCENDING))
        found = [self._memory(org_id, doc) for doc in query.stream()]
        return sorted(found, key=lambda m: m.created_at, reverse=True)[:limit]

    def get(self, org_id: str, memory_id: str, *, now: datetime) -> Memory | None:
        doc = self._memories(org_id).document(memory_id).get()
        data = doc.to_dict() if doc.exists else None
        if data is None or data["expires_at"] <= now:
            return None
        return self._memory(org_id, doc)

    def delete(self, org_id: str, memory_id: str) -> bool:
        ref = self._memories(org_id).document(memory_id)
        if not ref.get().exists:
            return False
        ref.delete()
        return True

    def forget_subject(self, org_id: str, subject: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        for _, level in self.forget_subject_ids(org_id, subject):
            counts[level] = counts.get(level, 0) + 1
        return counts

    def forget_subject_ids(self, org_id: str, subject: str) -> list[tuple[str, int]]:
        """``forget_subject``, answering (id, level) of each memory deleted (for a vector index beside)."""
        gone: list[tuple[str, int]] = []
        query = self._memories(org_id).where(filter=FieldFilter("subjects", "array_contains", subject))
        for doc in query.stream():
            level = int(doc.to_dict()["level"])
            doc.reference.delete()
            gone.append((doc.id, level))
        return gone

    def delete_expired(self, *, now: datetime, batch: int) -> list[tuple[str, int]]:
        return [(org_id, level) for org_id, _, level in self.delete_expired_ids(now=now, batch=batch)]

    def delete_expired_ids(self, *, now: datetime, batch: int) -> list[tuple[str, str, int]]:
        """``delete_expired``, answering (org, id, level) of each memory deleted."""
        query = (self.client.collection_group("memories").where(filter=FieldFilter("expires_at", "<=", now))
                 .limit(batch))
        gone: list[tuple[str, str, int]] = []
        writes = self.client.batch()
        for doc in query.stream():
            writes.delete(doc.reference)
            gone.append((doc.reference.parent.parent.id, doc.id, int((doc.to_dict() or {})["level"])))
        if gone:
            writes.commit()
        return gone

    def stale(self, org_id: str, *, embedder: str, batch: int) -> list[tuple[str, str]]:
        query = self._memories(org_id).where(filter=FieldFilter("embedder", "!=", embedder)).limit(batch)
        return [(doc.id, str(doc.to_dict()["content"])) for doc in query.stream()]

    def orgs_with_stale(self, *, embedder: str) -> list[str]:
        query = self.client.collection_group("memories").where(filter=FieldFilter("embedder", "!=", embedder))
        return sorted({doc.reference.parent.parent.id for doc in query.stream()})

    def replace_vectors(self, org_id: str, *, embedder: str, vectors: dict[str, Sequence[float]]) -> None:
        writes = self.client.batch()
        for memory_id, vector in vectors.items():
            writes.update(self._memories(org_id).document(memory_id),
                          {"embedder": embedder, "embedding": Vector([float(x) for x in vector])})
        writes.commit()

    def maintain(self) -> None:
        """Nothing: Firestore's vector indexes are declared in terraform."""
