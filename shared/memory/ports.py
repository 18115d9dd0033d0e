"""The memory context's ports: the embedder, the store of Levels 2-4, the org preferences (L5)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from shared.memory.models import Level, Memory


class Embedder(Protocol):
    """Text → unit vectors of a fixed size. ``name`` is recorded with every stored vector."""

    name: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens the embedder's tokenizer makes of ``text`` (the context budget's unit)."""
        ...



class MemoryStore(Protocol):
    """Levels 2-4 of one deployment. Every call names its org; a store never answers across orgs,
    never returns a memory whose ``expires_at`` has passed (``now``), and compares only vectors of
    the embedder named in the call.
    """

    def add(self, memories: Sequence[Memory], vectors: Sequence[Sequence[float]]) -> None:
        """Store memories (all of one org) with their vectors."""
        ...

    def search(self, org_id: str, *, level: Level, vector: Sequence[float], k: int, now: datetime,
               embedder: str, namespace: str | None = None) -> list[Memory]:
        """The ``k`` live memories of the org and level nearest to ``vector``, nearest first, each
        with its cosine ``similarity``."""
        ...

    def recent(self, org_id: str, *, level: Level, limit: int, now: datetime) -> list[Memory]:
        """The newest live memories of the org and level."""
        ...

    def get(self, org_id: str, memory_id: str, *, now: datetime) -> Memory | None:
        """One live memory of the org, or None."""
        ...

    def delete(self, org_id: str, memory_id: str) -> bool:
        """Delete one memory of the org; False when it has none by that id."""
        ...

    def forget_subject(self, org_id: str, subject: str) -> dict[int, int]:
        """Delete every memory of the org naming ``subject``; how many per level."""
        ...

    def delete_expired(self, *, now: datetime, batch: int) -> list[tuple[str, int]]:
        """Delete at most ``batch`` expired memories (any org); (org, level) of each."""
        ...

    def stale(self, org_id: str, *, embedder: str, batch: int) -> list[tuple[str, str]]:
        """(id, content) of up to ``batch`` memories of the org made by another embedder."""
        ...

    def orgs_with_stale(self, *, embedder: str) -> list[str]:
        """Orgs holding vectors of another embedder than ``embedder``."""
        ...

    def replace_vectors(self, org_id: str, *, embedder: str, vectors: dict[str, Sequence[float]]) -> None:
        """Set new vectors (made by ``embedder``) for memories of the org, by id."""
        ...

    def maintain(self) -> None:
        """The backend's periodic housekeeping, run by the GC job (pgvector: an HNSW index per
        large org); nothing for a backend that needs none."""
        ...


class Preferences(Protocol):
    """Level 5: an org's preferences (identity owns them; the composition root wires this)."""

    def __call__(self, org_id: str) -> dict[str, Any]: ...
