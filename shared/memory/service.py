"""Memory (Flow 4): store what runs learn, find it again, forget it on time.

Levels: 1 is the LangGraph state of a run (the checkpointer's; cleared after the workflow), 2 task
summaries (TTL 30 days), 3 knowledge in the five namespaces (kept), 4 episodes (TTL 90 days), 5
the org's preferences (identity's ``org_preferences``). Levels 2-4 live in a ``MemoryStore``
(pgvector locally; Firestore / Vertex Vector Search in gcp). Every vector records its embedder:
searches compare only vectors of the current one, and ``reembed`` moves older rows over.

Expiry is decided by the query (``expires_at > now``), so an expired memory is never returned,
whatever the GC has done; ``gc`` only reclaims space, in bounded batches. The clock is injected.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.audit import AuditLog
from shared.catalog import MemoryNamespace
from shared.kernel.db.database import Database
from shared.kernel.errors import NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.memory.models import (
    STORED_LEVELS,
    ContextItem,
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

_log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:memory"


@dataclass(frozen=True)
class MemorySettings:
    """TTLs, top-k and thresholds (Flow 4's defaults)."""

    summary_ttl: timedelta = timedelta(days=30)
    episode_ttl: timedelta = timedelta(days=90)
    summary_k: int = 5
    knowledge_k: int = 10
    knowledge_min_similarity: float = 0.7
    episode_k: int = 3
    context_budget: int = 10_000
    chunk_tokens: int = 200
    max_document_bytes: int = 256 * 1024
    max_documents: int = 20
    max_content_bytes: int = 16 * 1024
    max_k: int = 50
    gc_batch: int = 500
    gc_max_batches: int = 100


_NAMESPACES = frozenset(n.value for n in MemoryNamespace)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryService:
    """The five levels behind one service: add, search, forget, GC, re-embed, build a context."""

    def __init__(self, db: Database, store: MemoryStore, embedder: Embedder, audit: AuditLog, *,
                 preferences: Preferences, settings: MemorySettings | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.db = db
        self.store = store
        self.embedder = embedder
        self.audit = audit
        self.preferences = preferences
        self.settings = settings or MemorySettings()
        self.clock = clock

    # -- writing -------------------------------------------------------------------------------
    def _expiry(self, level: Level, now: datetime) -> datetime | None:
        if level == Level.SUMMARY:
            return now + self.settings.summary_ttl
        if level == Level.EPISODE:
            return now + self.settings.episode_ttl
        return None

    def remember(self, org_id: str, items: Sequence[NewMemory], *, actor: str = SYSTEM_ACTOR) -> list[Memory]:
        """Embed and store memories of an org (Levels 2-4); returns them with their ids."""
        now = self.clock()
        memories: list[Memory] = []
        for item in items:
            if item.level not in STORED_LEVELS:
                raise Unprocessable(f"level {int(item.level)} is not stored here (levels 2, 3 and 4 are)",
                                    details=[{"path": "level", "message": "must be 2, 3 or 4"}])
            if (item.level == Level.KNOWLEDGE) != (item.namespace is not None) or (
                    item.namespace is not None and item.namespace not in _NAMESPACES):
                raise Unprocessable("a namespace is given exactly for Level 3 knowledge",
                                    details=[{"path": "namespace",
                                              "message": "one of the five, only and always for level 3"}])
            if not item.content.strip() or len(item.content.encode()) > self.settings.max_content_bytes:
                raise Unprocessable(f"a memory's content must be 1 to {self.settings.max_content_bytes} bytes",
                                    details=[{"path": "content", "message": "empty or too large"}])
            memories.append(Memory(id=new_id("mem"), org_id=org_id, level=item.level, namespace=item.namespace,
                                   subjects=sorted(set(item.subjects)), content=item.content,
                                   metadata=item.metadata, embedder=self.embedder.name, created_at=now,
                                   expires_at=self._expiry(item.level, now)))
        if not memories:
            return []
        vectors = self.embedder.embed([m.content for m in memories])
        self.store.add(memories, vectors)
        levels = sorted({int(m.level) for m in memories})
        with self.db.transaction() as tx:
            self.audit.append(tx, org_id=org_id, actor=actor, action="memory.stored", target=memories[0].id,
                              details={"count": len(memories), "levels": levels})
        return memories

    def chunk(self, text: str) -> list[str]:
        """Split a document into chunks of at most ``chunk_tokens`` tokens, on sentence and
        paragraph boundaries where possible (a longer sentence is cut between words)."""
        limit = self.settings.chunk_tokens
        pieces: list[str] = []
        for sentence in (s.strip() for s in _SENTENCE.split(text)):
            if not sentence:
                continue
            if self.embedder.count_tokens(sentence) <= limit:
                pieces.append(sentence)
                continue
            words: list[str] = []
            for word in sentence.split():
                if words and self.embedder.count_tokens(" ".join([*words, word])) > limit:
                    pieces.append(" ".join(words))
                    words = []
                words.append(word)
            if words:
                pieces.append(" ".join(words))
        chunks: list[str] = []
        current = ""
        for piece in pieces:
            joined = f"{current} {piece}".strip()
            if current and self.embedder.count_tokens(joined) > limit:
                chunks.append(current)
                current = piece
            else:
                current = joined
        if current:
            chunks.append(current)
        return chunks

    def add_knowledge(self, org_id: str, namespace: str, documents: Sequence[str], *, actor: str,
                      subjects: Sequence[str] = (), title: str | None = None) -> KnowledgeAdded:
        """Chunk documents into Level 3 knowledge of one namespace."""
        try:
            space = MemoryNamespace(namespace)
        except ValueError:
            raise NotFound(f"no knowledge namespace {namespace!r}; the namespaces are "
                           + ", ".join(n.value for n in MemoryNamespace)) from None
        if not documents or len(documents) > self.settings.max_documents:
            raise Unprocessable(f"send 1 to {self.settings.max_documents} documents",
                                details=[{"path": "documents", "message": "empty or too many"}])
        items: list[NewMemory] = []
        for index, document in enumerate(documents):
            if not document.strip() or len(document.encode()) > self.settings.max_document_bytes:
                raise Unprocessable(f"a document must be 1 to {self.settings.max_document_bytes} bytes",
                                    details=[{"path": f"documents.{index}", "message": "empty or too large"}])
            chunks = self.chunk(document)
            items.extend(NewMemory(level=Level.KNOWLEDGE, namespace=space.value, content=chunk, subjects=list(subjects),
                                   metadata={"document": index, "chunk": n, "title": title})
                         for n, chunk in enumerate(chunks))
        stored = self.remember(org_id, items, actor=actor)
        return KnowledgeAdded(namespace=space.value, document_chunks=[m.id for m in stored])

    # -- reading -------------------------------------------------------------------------------
    def search(self, org_id: str, *, level: int, query: str, k: int | None = None,
               namespace: str | None = None) -> SearchOut:
        """The org's memories of one level nearest to ``query`` (knowledge above the threshold)."""
        try:
            wanted = Level(level)
        except ValueError:
            wanted = None
        if wanted not in STORED_LEVELS:
            raise Unprocessable("level must be 2, 3 or 4",
                                details=[{"path": "level", "message": "must be 2, 3 or 4"}])
        assert wanted is not None
        if namespace is not None and wanted != Level.KNOWLEDGE:
            raise Unprocessable("a namespace applies to level 3 only",
                                details=[{"path": "namespace", "message": "only for level 3"}])
        if namespace is not None and namespace not in _NAMESPACES:
            raise Unprocessable(f"no knowledge namespace {namespace!r}",
                                details=[{"path": "namespace", "message": "unknown namespace"}])
        if not query.strip():
            raise Unprocessable("query must not be empty", details=[{"path": "query", "message": "empty"}])
        default_k = {Level.SUMMARY: self.settings.summary_k, Level.KNOWLEDGE: self.settings.knowledge_k,
                     Level.EPISODE: self.settings.episode_k}[wanted]
        k = default_k if k is None else k
        if not 1 <= k <= self.settings.max_k:
            raise Unprocessable(f"k must be 1 to {self.settings.max_k}",
                                details=[{"path": "k", "message": "out of range"}])
        return SearchOut(items=self._search(org_id, wanted, query, k, namespace=namespace))

    def _search(self, org_id: str, level: Level, query: str, k: int, *, namespace: str | None = None,
                vector: Sequence[float] | None = None) -> list[Memory]:
        vector = vector if vector is not None else self.embedder.embed([query])[0]
        hits = self.store.search(org_id, level=level, vector=vector, k=k, now=self.clock(),
                                 embedder=self.embedder.name, namespace=namespace)
        if level == Level.KNOWLEDGE:
            hits = [h for h in hits if (h.similarity or 0.0) >= self.settings.knowledge_min_similarity]
        return _newest_fact_first(hits)

    def get(self, org_id: str, memory_id: str) -> Memory:
        found = self.store.get(org_id, memory_id, now=self.clock())
        if found is None:
            raise NotFound("no such memory in this organisation")
        return found

    # -- forgetting ----------------------------------------------------------------------------
    def delete(self, org_id: str, memory_id: str, *, actor: str) -> None:
        """Delete one memory (404 when the org has none by that id)."""
        if not self.store.delete(org_id, memory_id):
            raise NotFound("no such memory in this organisation")
        with self.db.transaction() as tx:
            self.audit.append(tx, org_id=org_id, actor=actor, action="memory.deleted", target=memory_id)

    def forget(self, org_id: str, subject: str, *, actor: str) -> Forgotten:
        """Delete everything the org remembers about one subject (``user:…``, ``resource:…``,
        ``agent:…``) across Levels 2-4."""
        if not re.fullmatch(r"[a-z]+:[^\s]{1,200}", subject):
            raise Unprocessable("subject must look like kind:value (user:…, resource:…, agent:…)",
                                details=[{"path": "subject", "message": "bad subject"}])
        counts = self.store.forget_subject(org_id, subject)
        with self.db.transaction() as tx:
            self.audit.append(tx, org_id=org_id, actor=actor, action="memory.forgotten", target=subject,
                              details={"deleted": sum(counts.values())})
        return Forgotten(subject=subject, deleted={str(level): n for level, n in sorted(counts.items())})

    def gc(self) -> GcOut:
        """Delete expired Level 2/4 memories in bounded batches (safe concurrently: each batch
        locks its rows with SKIP LOCKED; repeated runs find nothing more)."""
        deleted = batches = 0
        now = self.clock()
        while batches < self.settings.gc_max_batches:
            gone = self.store.delete_expired(now=now, batch=self.settings.gc_batch)
            batches += 1
            deleted += len(gone)
            if len(gone) < self.settings.gc_batch:
                break
        _log.info("memory gc deleted %d expired memories in %d batches", deleted, batches)
        self.store.maintain()
        return GcOut(deleted=deleted, batches=batches)

    def reembed(self, *, batch: int = 256) -> int:
        """Re-embed every memory made by another embedder than the current one (a job after the
        embedder changed); returns how many were moved. Searches never mix the two spaces."""
        moved = 0
        for org_id in self.store.orgs_with_stale(embedder=self.embedder.name):
            while rows := self.store.stale(org_id, embedder=self.embedder.name, batch=batch):
                vectors = self.embedder.embed([content for _, content in rows])
                self.store.replace_vectors(org_id, embedder=self.embedder.name,
                                           vectors={mid: v for (mid, _), v in zip(rows, vectors, strict=True)})
                moved += len(rows)
        return moved

    # -- the context of a run ------------------------------------------------------------------
    def build_context(self, org_id: str, *, query: str, levels: Sequence[int], namespaces: Sequence[str] = (),
                      budget: int | None = None, session: str | None = None) -> MemoryContext:
        """Load the levels a manifest declares and fit them into ``budget`` tokens (counted with
        the embedder's tokenizer). Ranked by relevance (summaries and episodes also by recency),
        de-duplicated; what does not fit is left out and logged."""
        started = time.perf_counter()
        budget = self.settings.context_budget if budget is None else budget
        wanted = {Level(level) for level in levels if level in {int(x) for x in Level}}
        now = self.clock()
        candidates: list[tuple[float, Level, str, str | None, dict[str, Any]]] = []
        if Level.SESSION in wanted and session:
            candidates.append((3.0, Level.SESSION, session, None, {}))
        preferences = self.preferences(org_id) if Level.PREFERENCES in wanted else {}
        if preferences:
            candidates.append((2.0, Level.PREFERENCES, "org preferences: " + _compact(preferences), None, {}))
        vector = self.embedder.embed([query])[0] if wanted & set(STORED_LEVELS) and query.strip() else None
        if vector is not None:
            horizon = self.settings.episode_ttl.total_seconds()
            for level, k in ((Level.EPISODE, self.settings.episode_k), (Level.SUMMARY, self.settings.summary_k)):
                if level in wanted:
                    for hit in self._search(org_id, level, query, k, vector=vector):
                        age = max((now - hit.created_at).total_seconds(), 0.0)
                        score = (hit.similarity or 0.0) + 0.1 * (1.0 - min(age / horizon, 1.0))
                        candidates.append((score, level, hit.content, hit.id, hit.metadata))
            if Level.KNOWLEDGE in wanted:
                for space in namespaces:
                    for hit in self._search(org_id, Level.KNOWLEDGE, query, self.settings.knowledge_k,
                                             namespace=space, vector=vector):
                        candidates.append((hit.similarity or 0.0, Level.KNOWLEDGE, hit.content, hit.id, hit.metadata))
        candidates.sort(key=lambda c: -c[0])
        seen: set[str] = set()
        items: list[ContextItem] = []
        used = left_out = 0
        for score, level, content, memory_id, metadata in candidates:
            key = " ".join(content.lower().split())
            if key in seen:
                continue
            seen.add(key)
            line = f"[L{int(level)}] {content}"
            tokens = self.embedder.count_tokens(line) + 1  # +1: the newline joining items
            if used + tokens > budget:
                left_out += 1
                continue
            used += tokens
            items.append(ContextItem(level=level, content=content, tokens=tokens, score=round(score, 6),
                                     memory_id=memory_id, metadata=metadata))
        if left_out:
            _log.info("memory context for org %s left out %d memories over the %d-token budget",
                      org_id, left_out, budget)
        _log.debug("memory context built in %.1f ms", (time.perf_counter() - started) * 1000)
        return MemoryContext(items=sorted(items, key=lambda i: int(i.level)), preferences=preferences,
                             tokens=used, budget=budget, left_out=left_out)

    # -- what runs learned ---------------------------------------------------------------------
    def learn(self, org_id: str, *, agent: str, run_id: str, levels: Sequence[int], learned: RunLearned) -> StoredOut:
        """Store a run's summary (Level 2) and episodes (Level 4), each only if the agent's manifest
        declares that level; every memory names the agent and the run as subjects."""
        subjects = [f"agent:{agent}", f"run:{run_id}"]
        items: list[NewMemory] = []
        if learned.summary and Level.SUMMARY in levels:
            items.append(NewMemory(level=Level.SUMMARY, content=learned.summary, subjects=subjects,
                                   metadata={"run_id": run_id, "agent": agent}))
        if Level.EPISODE in levels:
            items.extend(NewMemory(level=Level.EPISODE, content=e.content, subjects=[*subjects, *e.subjects],
                                   metadata={**e.metadata, "run_id": run_id, "agent": agent})
                         for e in learned.episodes)
        return StoredOut(ids=[m.id for m in self.remember(org_id, items, actor=f"run:{run_id}")])

    def record_remediation(self, org_id: str, *, agent: str, run_id: str, action_id: str, decision: str,
                           description: str, actor: str) -> Memory:
        """A Level 4 episode for a remediation an approver decided (``approved`` or ``rejected``):
        the approvals workflow calls this, so the agent's next run can avoid a rejected one."""
        if decision not in {"approved", "rejected"}:
            raise Unprocessable("decision must be approved or rejected",
                                details=[{"path": "decision", "message": "approved or rejected"}])
        content = f"Remediation {decision}: {description} (action {action_id})"
        (stored,) = self.remember(org_id, [NewMemory(
            level=Level.EPISODE, content=content,
            subjects=[f"agent:{agent}", f"run:{run_id}", f"action:{action_id}"],
            metadata={"action_id": action_id, "decision": decision, "run_id": run_id, "agent": agent})], actor=actor)
        return stored


def _newest_fact_first(hits: list[Memory]) -> list[Memory]:
    """Memories stating the same fact (``metadata["fact"]``, a key the writer chooses) keep the
    places their group holds in the ranking, newest first: an updated fact ranks above the stale
    one it replaces, whatever their similarities."""
    groups: dict[str, list[Memory]] = {}
    for hit in hits:
        key = hit.metadata.get("fact")
        if isinstance(key, str) and key:
            groups.setdefault(key, []).append(hit)
    if not any(len(group) > 1 for group in groups.values()):
        return hits
    queues = {key: sorted(group, key=lambda m: m.created_at, reverse=True) for key, group in groups.items()}
    ranked: list[Memory] = []
    for hit in hits:
        key = hit.metadata.get("fact")
        ranked.append(queues[key].pop(0) if isinstance(key, str) and key in queues else hit)
    return ranked


def _compact(data: dict[str, Any]) -> str:
    return "; ".join(f"{key}={data[key]}" for key in sorted(data))
