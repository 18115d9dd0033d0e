"""The control-plane checkpointer, on its in-process store, driven by the real LangGraph.

The same ``RemoteCheckpointSaver`` runs against the data-plane API in the end-to-end tests; here
its contract with LangGraph is checked directly: a graph stopped between steps resumes after the
last completed step from a new saver, history and writes behave as with LangGraph's own saver.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from runtime.checkpointer import MemoryCheckpointStore, RemoteCheckpointSaver


class State(TypedDict, total=False):
    trail: Annotated[list[str], operator.add]
    total: int


def build(calls: list[str]) -> StateGraph[State]:
    def step(name: str, amount: int) -> Any:
        def node(state: State) -> State:
            calls.append(name)
            return {"trail": [name], "total": state.get("total", 0) + amount}
        return node

    graph = StateGraph(State)
    for name, amount in (("a", 1), ("b", 10), ("c", 100)):
        graph.add_node(name, step(name, amount))
    graph.add_edge(START, "a")
    graph.add_edge("a", "b")
    graph.add_edge("b", "c")
    graph.add_edge("c", END)
    return graph


CONFIG: Any = {"configurable": {"thread_id": "run_1"}}


def test_a_run_stopped_between_steps_resumes_after_the_last_one():
    store, calls = MemoryCheckpointStore(), []
    counters = {"records_processed": 0.0}
    saver = RemoteCheckpointSaver(store, run_id="run_1", progress=lambda: dict(counters))
    graph = build(calls).compile(checkpointer=saver)
    stream = graph.stream({"trail": [], "total": 0}, CONFIG, stream_mode="updates", durability="sync")
    for update in stream:
        counters["records_processed"] += 7
        if "b" in update:
            break
    stream.close()
    assert calls == ["a", "b"]
    # Another worker, another saver, the same store: LangGraph continues with "c" only.
    resumed = RemoteCheckpointSaver(store, run_id="run_1")
    assert resumed.latest_progress() == {"records_processed": 7.0}  # counted when "b"'s checkpoint was taken
    graph2 = build(calls).compile(checkpointer=resumed)
    assert graph2.get_state(CONFIG).next == ("c",)
    final = graph2.invoke(None, CONFIG, durability="sync")
    assert calls == ["a", "b", "c"] and final == {"trail": ["a", "b", "c"], "total": 111}


def test_history_matches_langgraphs_own_saver():
    ours = build([]).compile(checkpointer=RemoteCheckpointSaver(MemoryCheckpointStore(), run_id="run_1"))
    theirs = build([]).compile(checkpointer=InMemorySaver())
    for graph in (ours, theirs):
        graph.invoke({"trail": [], "total": 0}, CONFIG, durability="sync")

    def history(graph: Any) -> list[tuple[Any, ...]]:
        return [(s.values, s.next, s.metadata["step"], s.metadata["source"]) for s in graph.get_state_history(CONFIG)]

    assert history(ours) == history(theirs) and len(history(ours)) == 5
    snapshots = list(ours.get_state_history(CONFIG))
    assert snapshots[0].parent_config["configurable"]["checkpoint_id"] == snapshots[1].config["configurable"][
        "checkpoint_id"]
    assert [s.values.get("total") for s in ours.get_state_history(CONFIG, limit=2)] == [111, 11]
    before = list(ours.get_state_history(CONFIG, before=snapshots[1].config))
    assert [s.values.get("total") for s in before] == [1, 0, None]
    assert [s.metadata["step"] for s in ours.get_state_history(CONFIG, filter={"step": 1})] == [1]


def test_writes_are_kept_once_and_special_ones_replaced():
    store = MemoryCheckpointStore()
    saver = RemoteCheckpointSaver(store, run_id="run_1")
    build([]).compile(checkpointer=saver).invoke({"trail": [], "total": 0}, CONFIG)
    config = saver.get_tuple(CONFIG).config
    saver.put_writes(config, [("trail", ["x"]), ("__error__", "first")], task_id="t1", task_path="~c")
    saver.put_writes(config, [("trail", ["changed"]), ("__error__", "second")], task_id="t1", task_path="~c")
    saver.put_writes(config, [("trail", ["y"])], task_id="t0", task_path="~b")
    writes = saver.get_tuple(config).pending_writes
    assert writes == [("t0", "trail", ["y"]), ("t1", "__error__", "second"), ("t1", "trail", ["x"])]


def test_the_saver_serves_one_run_only():
    saver = RemoteCheckpointSaver(MemoryCheckpointStore(), run_id="run_1")
    with pytest.raises(ValueError, match="run_1"):
        saver.get_tuple({"configurable": {"thread_id": "run_2"}})
    assert saver.get_tuple(CONFIG) is None and saver.latest_progress() == {}
    with pytest.raises(ValueError, match="checkpoint_id"):
        saver.put_writes(CONFIG, [("trail", ["x"])], task_id="t")
