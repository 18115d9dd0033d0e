"""The memory context's models: levels, memories, search hits, the context handed to a run."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Level(IntEnum):
    """Flow 4's five levels. 1 (the LangGraph state) and 5 (org preferences) live elsewhere."""

    SESSION = 1
    SUMMARY = 2
    KNOWLEDGE = 3
    EPISODE = 4
    PREFERENCES = 5


STORED_LEVELS = (Level.SUMMARY, Level.KNOWLEDGE, Level.EPISODE)


class NewMemory(BaseModel):
    """A memory to store (the service embeds ``content``)."""

    level: Level
    content: str
    namespace: str | None = Field(default=None, description="Level 3 only: one of the five knowledge namespaces.")
    subjects: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Memory(BaseModel):
    id: str
    org_id: str
    level: Level
    namespace: str | None = None
    subjects: list[str] = Field(default_factory=list)
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedder: str
    created_at: datetime
    expires_at: datetime | None = None
    similarity: float | None = Field(default=None, description="Cosine similarity to the query, when searched.")


class SearchOut(BaseModel):
    items: list[Memory]


class KnowledgeAdded(BaseModel):
    namespace: str
    document_chunks: list[str] = Field(description="The ids of the chunks stored, in document order.")


class Forgotten(BaseModel):
    subject: str
    deleted: dict[str, int] = Field(description="Memories deleted per level (\"2\", \"3\", \"4\").")


class GcOut(BaseModel):
    deleted: int
    batches: int


class ContextItem(BaseModel):
    level: Level
    content: str
    tokens: int
    score: float
    memory_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class MemoryContext(BaseModel):
    """What a run gets before it starts: the chosen memories, within the token budget."""

    items: list[ContextItem]
    preferences: dict[str, Any] = Field(default_factory=dict)
    tokens: int
    budget: int
    left_out: int = Field(description="Memories that did not fit the budget (logged).")

    def text(self) -> str:
        """The context as one prompt-ready text, levels in order."""
        return "\n".join(f"[L{int(item.level)}] {item.content}" for item in self.items)


class EpisodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=8000)
    subjects: list[str] = Field(default_factory=list, max_length=50)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunLearned(BaseModel):
    """What a run learned, sent by its data plane after the run: a task summary (Level 2) and
    episodes (Level 4: what was tried and how it turned out)."""

    model_config = ConfigDict(extra="forbid")

    summary: str | None = Field(default=None, min_length=1, max_length=8000)
    episodes: list[EpisodeIn] = Field(default_factory=list, max_length=20)


class ContextRequest(BaseModel):
    """A data plane's request for its run's memory context."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4000)
    session: str | None = Field(default=None, max_length=20000)
    budget: int | None = Field(default=None, ge=0, le=100_000)


class StoredOut(BaseModel):
    ids: list[str]
