"""Level 3 (gcp) on Vertex AI Vector Search; the memories' documents stay in Firestore.

Vertex AI Vector Search holds vectors and filter tokens, not documents, so the store is split:

* the documents (content, metadata, subjects, expiry, and the vector) are written to and read from
  ``documents``, a ``FirestoreStore`` — every call that is not a vector search goes there;
* the vectors of the levels in ``levels`` (Level 3 in the composition root) are also datapoints of
  a Vector Search index (``IndexServiceClient.upsert_datapoints`` / ``remove_datapoints``, a
  stream-update index), and their searches are ``MatchServiceClient.find_neighbors`` on the index's
  deployed endpoint; the other levels are searched by Firestore.

Isolation: each datapoint carries the restricts ``org_id`` = its org, ``level``, ``embedder`` and
(L3) ``namespace``, and ``expires_at`` as a numeric restrict (epoch seconds; a memory that never
expires holds the year 9999). Every query sends allow-lists for the caller's org, the level and the
embedder (and the namespace) and ``expires_at > now``: the index itself never answers with another
org's, another embedder's or an expired datapoint. A search without an org raises before any call
(fails closed). The neighbours' documents are then read from Firestore in the same org (its path),
which drops any datapoint whose document is gone or expired meanwhile — a second wall.

Write order: the document first, then the datapoint (a datapoint never points at nothing for long;
a document whose datapoint failed is not found by search until it is written again).

``google-cloud-aiplatform`` is imported when the first client is built (gcp only).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.memory.adapters.firestore_store import NEVER, FirestoreStore
from shared.memory.models import Level, Memory

#: The index's distance measure (its ``distanceMeasureType``): unit vectors with dot product,
#: as Vertex recommends for cosine; ``find_neighbors`` then answers the dot product itself.
DOT_PRODUCT = "DOT_PRODUCT_DISTANCE"
COSINE = "COSINE_DISTANCE"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _seconds(when: datetime) -> int:
    return int((when - _EPOCH).total_seconds())


class VertexVectorSearchStore:
    """The ``MemoryStore`` port: Vertex AI Vector Search for the vectors of ``levels``, Firestore
    (``documents``) for everything else."""

    def __init__(self, documents: FirestoreStore, *, index: str, index_endpoint: str, deployed_index_id: str,
                 location: str = "us-central1", match_api_endpoint: str | None = None,
                 levels: Collection[Level] = (Level.KNOWLEDGE,), distance: str = DOT_PRODUCT,
                 index_transport: Any = None, match_transport: Any = None) -> None:
        if distance not in (DOT_PRODUCT, COSINE):
            raise ValueError(f"unsupported distance measure {distance}")
        self.documents = documents
        self.index = index  # projects/{p}/locations/{l}/indexes/{id}
        self.index_endpoint = index_endpoint  # projects/{p}/locations/{l}/indexEndpoints/{id}
        self.deployed_index_id = deployed_index_id
        self.levels = frozenset(levels)
        self.distance = distance
        self._location = location
        # A public endpoint answers queries on its own domain (``publicEndpointDomainName``).
        self._match_api_endpoint = match_api_endpoint or f"{location}-aiplatform.googleapis.com"
        self._index_transport = index_transport
        self._match_transport = match_transport
        self._index_client: Any = None
        self._match_client: Any = None

    # -- the clients (built on first use) -------------------------------------------------------
    def _indexes(self) -> Any:
        if self._index_client is None:
            from google.api_core.client_options import ClientOptions  # noqa: PLC0415 - gcp only
            from google.cloud.aiplatform_v1 import IndexServiceClient  # noqa: PLC0415 - gcp only

            self._index_client = (IndexServiceClient(transport=self._index_transport) if self._index_transport
                                  else IndexServiceClient(client_options=ClientOptions(
                                      api_endpoint=f"{self._location}-aiplatform.googleapis.com")))
        return self._index_client

    def _matches(self) -> Any:
        if self._match_client is None:
            from google.api_core.client_options import ClientOptions  # noqa: PLC0415 - gcp only
            from google.cloud.aiplatform_v1 import MatchServiceClient  # noqa: PLC0415 - gcp only

            self._match_client = (MatchServiceClient(transport=self._match_transport) if self._match_transport
                                  else MatchServiceClient(client_options=ClientOptions(
                                      api_endpoint=self._match_api_endpoint)))
        return self._match_client

    # -- datapoints ------------------------------------------------------------------------------
    @staticmethod
    def _datapoint(memory: Memory, vector: Sequence[float]) -> Any:
        from google.cloud.aiplatform_v1 import IndexDatapoint  # noqa: PLC0415 - gcp only

        restricts = [IndexDatapoint.Restriction(namespace="org_id", allow_list=[memory.org_id]),
                     IndexDatapoint.Restriction(namespace="level", allow_list=[str(int(memory.level))]),
                     IndexDatapoint.Restriction(namespace="embedder", allow_list=[memory.embedder])]
        if memory.namespace is not None:
            restricts.append(IndexDatapoint.Restriction(namespace="namespace", allow_list=[memory.namespace]))
        expires = _seconds(memory.expires_at or NEVER)
        return IndexDatapoint(datapoint_id=memory.id, feature_vector=[float(x) for x in vector], restricts=restricts,
                              numeric_restricts=[IndexDatapoint.NumericRestriction(namespace="expires_at",
                                                                                   value_int=expires)])

    def _upsert(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        points = [self._datapoint(m, v) for m, v in zip(memories, vectors, strict=True) if m.level in self.levels]
        if points:
            self._indexes().upsert_datapoints(request={"index": self.index, "datapoints": points})

    def _remove(self, ids: Sequence[str]) -> None:
        if ids:
            self._indexes().remove_datapoints(request={"index": self.index, "datapoint_ids": list(ids)})

    # -- the port ----------------------------------------------------------------------------------
    def add(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        self.documents.add(memories, vectors)
        self._upsert(memories, vectors)

    def search(self, org_id: str, *, level: Level, vector: Sequence[float], k: int, now: datetime,
               embedder: str, namespace: str | None = None) -> list[Memory]:
        if not org_id:
            raise ValueError("a memory statement needs an org")
        if level not in self.levels:
            return self.documents.search(org_id, level=level, vector=vector, k=k, now=now, embedder=embedder,
                                         namespace=namespace)
        from google.cloud.aiplatform_v1 import FindNeighborsRequest, IndexDatapoint  # noqa: PLC0415 - gcp only

        restricts = [IndexDatapoint.Restriction(namespace="org_id", allow_list=[org_id]),
                     IndexDatapoint.Restriction(namespace="level", allow_list=[str(int(level))]),
                     IndexDatapoint.Restriction(namespace="embedder", allow_list=[embedder])]
        if namespace is not None:
            restricts.append(IndexDatapoint.Restriction(namespace="namespace", allow_list=[namespace]))
        query = FindNeighborsRequest.Query(
            datapoint=IndexDatapoint(datapoint_id="query", feature_vector=[float(x) for x in vector],
                                     restricts=restricts,
                                     numeric_restricts=[IndexDatapoint.NumericRestriction(
                                         namespace="expires_at", value_int=_seconds(now),
                                         op=IndexDatapoint.NumericRestriction.Operator.GREATER)]),
            neighbor_count=k)
        response = self._matches().find_neighbors(request=FindNeighborsRequest(
            index_endpoint=self.index_endpoint, deployed_index_id=self.deployed_index_id, queries=[query],
            return_full_datapoint=False))
        out: list[Memory] = []
        for found in response.nearest_neighbors:
            for neighbor in found.neighbors:
                memory = self.documents.get(org_id, neighbor.datapoint.datapoint_id, now=now)
                if memory is None or memory.level != level or memory.embedder != embedder:
                    continue  # gone, expired or moved since the index answered: never returned
                similarity = (float(neighbor.distance) if self.distance == DOT_PRODUCT
                              else 1.0 - float(neighbor.distance))
                out.append(memory.model_copy(update={"similarity": similarity}))
        return out[:k]

    def recent(self, org_id: str, *, level: Level, limit: int, now: datetime) -> list[Memory]:
        return self.documents.recent(org_id, level=level, limit=limit, now=now)

    def get(self, org_id: str, memory_id: str, *, now: datetime) -> Memory | None:
        return self.documents.get(org_id, memory_id, now=now)

    def delete(self, org_id: str, memory_id: str) -> bool:
        if not self.documents.delete(org_id, memory_id):
            return False
        self._remove([memory_id])  # removing an id the index does not hold is harmless
        return True

    def forget_subject(self, org_id: str, subject: str) -> dict[int, int]:
        gone = self.documents.forget_subject_ids(org_id, subject)
        self._remove([memory_id for memory_id, level in gone if level in self.levels])
        counts: dict[int, int] = {}
        for _, level in gone:
            counts[level] = counts.get(level, 0) + 1
        return counts

    def delete_expired(self, *, now: datetime, batch: int) -> list[tuple[str, int]]:
        gone = self.documents.delete_expired_ids(now=now, batch=batch)
        # Expired datapoints are already invisible (the expires_at restrict); this frees the index.
        self._remove([memory_id for _, memory_id, level in gone if level in self.levels])
        return [(org_id, level) for org_id, _, level in gone]

    def stale(self, org_id: str, *, embedder: str, batch: int) -> list[tuple[str, str]]:
        return self.documents.stale(org_id, embedder=embedder, batch=batch)

    def orgs_with_stale(self, *, embedder: str) -> list[str]:
        return self.documents.orgs_with_stale(embedder=embedder)

    def replace_vectors(self, org_id: str, *, embedder: str, vectors: dict[str, Sequence[float]]) -> None:
        self.documents.replace_vectors(org_id, embedder=embedder, vectors=vectors)
        # The datapoints' restricts come from the documents (expired ones too: the epoch as "now").
        memories = [m for memory_id in vectors if (m := self.documents.get(org_id, memory_id, now=_EPOCH))]
        self._upsert(memories, [vectors[m.id] for m in memories])

    def maintain(self) -> None:
        """Nothing: the index is provisioned by terraform and updated by streaming upserts."""
