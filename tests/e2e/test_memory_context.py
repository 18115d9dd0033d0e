"""The context builder: ranks, de-duplicates, never exceeds its token budget, loads only what the
manifest declares."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.memory import Level, MemoryService, NewMemory


@pytest.fixture(scope="module")
def filled(app: Any, container: Any) -> tuple[MemoryService, str]:
    from conftest import Client, unique_email

    memory: MemoryService = container.memory
    pair = container.identity.dev_grant(unique_email("ctx"))
    org_id = Client(app, pair.access_token).post("/orgs", json={"name": "Ctx"}).body["id"]
    memory.remember(org_id, [
        *(NewMemory(level=Level.SUMMARY, content=f"run {n}: BigQuery spend rose {n * 7}% on project p{n}")
          for n in range(8)),
        *(NewMemory(level=Level.EPISODE,
                    content=f"proposed rightsizing vm-{n}; outcome: {'rejected' if n % 2 else 'approved'}")
          for n in range(6)),
        NewMemory(level=Level.SUMMARY, content="run 0: BigQuery spend rose 0% on project p0"),  # a duplicate
    ])
    memory.add_knowledge(org_id, "cost_anomalies", [
        "BigQuery spend spikes usually come from unpartitioned table scans. Partition large tables by date."],
                         actor="user:test")
    return memory, org_id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(min_value=0, max_value=1500), session=st.text(max_size=400),
       levels=st.sets(st.integers(min_value=1, max_value=5), min_size=1))
def test_the_context_never_exceeds_its_budget(filled: tuple[MemoryService, str], budget: int, session: str,
                                              levels: set[int]) -> None:
    memory, org_id = filled
    ctx = memory.build_context(org_id, query="why did BigQuery spend rise?", levels=sorted(levels),
                               namespaces=["cost_anomalies"], budget=budget, session=session)
    assert ctx.tokens <= budget
    assert memory.embedder.count_tokens(ctx.text()) <= budget
    assert {int(item.level) for item in ctx.items} <= levels
    contents = [" ".join(i.content.lower().split()) for i in ctx.items]
    assert len(contents) == len(set(contents))  # de-duplicated


def test_only_declared_levels_and_namespaces_are_loaded(filled: tuple[MemoryService, str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    memory, org_id = filled
    only_episodes = memory.build_context(org_id, query="rightsizing", levels=[4])
    assert only_episodes.items and {int(i.level) for i in only_episodes.items} == {4}
    assert len(only_episodes.items) <= 3
    question = "What causes BigQuery spend spikes? Unpartitioned table scans"
    no_namespace = memory.build_context(org_id, query=question, levels=[3])
    assert no_namespace.items == []  # level 3 without a declared namespace reads nothing
    knowledge = memory.build_context(org_id, query=question, levels=[3],
                                     namespaces=["cost_anomalies"])
    assert knowledge.items and {int(i.level) for i in knowledge.items} == {3}
    with caplog.at_level("INFO"):
        tight = memory.build_context(org_id, query="BigQuery spend", levels=[2, 4], budget=30)
    assert tight.left_out > 0 and "left out" in caplog.text
