"""The memory context's public API: Flow 4's five levels (SPEC §3 memory row, §5 memory rule)."""

from shared.memory.models import (
    ContextItem,
    Forgotten,
    GcOut,
    KnowledgeAdded,
    Level,
    Memory,
    MemoryContext,
    NewMemory,
    SearchOut,
)
from shared.memory.ports import Embedder, MemoryStore, Preferences
from shared.memory.service import MemoryService, MemorySettings

__all__ = ["ContextItem", "Embedder", "Forgotten", "GcOut", "KnowledgeAdded", "Level", "Memory", "MemoryContext",
           "MemoryService", "MemorySettings", "MemoryStore", "NewMemory", "Preferences", "SearchOut"]
