"""Retrieval quality on a fixture the test generates: 100 facts about 25 services, a paraphrased
question for each (recall@10 ≥ 0.9 through the real embedder and the pgvector store), and updated
facts that must rank above the stale ones they replace."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.memory import Level, MemoryService, NewMemory
from shared.memory.adapters.pgvector_store import PgVectorStore

SERVICES = ["BigQuery", "Cloud SQL", "Cloud Run", "GKE", "Pub/Sub", "Cloud Storage", "Dataflow", "Spanner",
            "Memorystore", "Cloud Functions", "Bigtable", "Vertex AI", "Cloud CDN", "Filestore", "Dataproc",
            "Looker", "Composer", "Firestore", "Artifact Registry", "Cloud Build", "Cloud NAT", "Cloud Armor",
            "Cloud DNS", "Secret Manager", "Cloud Logging"]
TEAMS = ["data", "payments", "search", "platform", "growth", "mobile", "ml", "security", "infra", "web"]
REGIONS = ["us-central1", "europe-west1", "asia-east1", "us-east4", "europe-west4"]
PEOPLE = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jia"]


def facts_and_questions() -> list[tuple[str, str, str]]:
    """(fact key, fact, paraphrased question) for every service and attribute."""
    out = []
    for i, s in enumerate(SERVICES):
        out += [
            (f"budget:{s}", f"The monthly budget for {s} is {1000 + i * 250} dollars.",
             f"How much can we spend on {s} each month?"),
            (f"owner:{s}", f"The team that owns {s} is the {TEAMS[i % 10]} team.", f"Which team is responsible for {s}?"),
            (f"region:{s}", f"{s} runs in the {REGIONS[i % 5]} region.", f"Where is {s} deployed?"),
            (f"alerts:{s}", f"Alerts for {s} go to {PEOPLE[(i * 3) % 10]}.", f"Who gets notified when {s} has a problem?"),
        ]
    return out


def test_recall_at_10_and_updated_facts_rank_first(container: Any, make_org: Callable[..., Any]) -> None:
    _, org_id = make_org("Recall")
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    memory = MemoryService(container.db, PgVectorStore(container.db), container.memory.embedder, container.audit,
                           preferences=lambda _org: {}, clock=lambda: now[0])
    rows = facts_and_questions()
    stored = memory.remember(org_id, [NewMemory(level=Level.SUMMARY, content=fact, metadata={"fact": key})
                                      for key, fact, _ in rows])
    ids = {m.metadata["fact"]: m.id for m in stored}
    hits = 0
    for key, _, question in rows:
        found = [m.id for m in memory.search(org_id, level=2, query=question, k=10).items]
        hits += ids[key] in found
    recall = hits / len(rows)
    assert recall >= 0.9, recall

    # Ten facts change a week later; the newer statement ranks above the stale one.
    now[0] += timedelta(days=7)
    changed = rows[3::10]
    updates = memory.remember(org_id, [NewMemory(level=Level.SUMMARY, metadata={"fact": key},
                                                 content=fact.replace(" go to ", " now go to Zoe instead of ")
                                                 .replace(" is ", " is now ", 1)) for key, fact, _ in changed])
    for (key, _, question), update in zip(changed, updates, strict=True):
        found = [m.id for m in memory.search(org_id, level=2, query=question, k=10).items]
        assert update.id in found and ids[key] in found, key
        assert found.index(update.id) < found.index(ids[key]), key
