"""The memory context's public API: Flow 4's five levels (SPEC §3 memory row, §5 memory rule)."""

from shared.memory.models import (
    ContextItem,
    ContextRequest,
    EpisodeIn,
    Forgotten,
    GcOut,
    KnowledgeAdded,
    Level,
    Memory,
    MemoryContext,
    NewMemory,
    RunLearned,
    SearchOut,
    StoredOut,
)
from shared.memory.ports import Embedder, MemoryStore, Preferences
from shared.memory.service import MemoryService, MemorySettings

__all__ = [
    "ContextItem",
    "ContextRequest",
    "Embedder",
    "EpisodeIn",
    "Forgotten",
    "GcOut",
    "KnowledgeAdded",
    "Level",
    "Memory",
    "MemoryContext",
    "MemoryService",
    "MemorySettings",
    "MemoryStore",
    "NewMemory",
    "Preferences",
    "RunLearned",
    "SearchOut",
    "StoredOut",
]
