"""A LangGraph checkpointer that keeps a run's checkpoints in the control plane.

The data plane has no database of its own: ``RemoteCheckpointSaver`` stores every checkpoint and
pending write through the data-plane API (``PUT/GET /tasks/{task_id}/checkpoints...``, backed by
``run_checkpoints`` in PostgreSQL), serialised here with LangGraph's own serializer so that the
control plane stores opaque bytes and never imports LangGraph. When a run is delivered again (its
worker died and the lease expired), the next worker finds the last checkpoint and LangGraph
resumes after the last completed step instead of starting over.

The thread is the run (``thread_id = run_id``). Each checkpoint is stored whole, channel values
included: simple, and small for agents like the built-in one whose state shrinks after the first
step. Each checkpoint also carries the run's counters (records processed, CPU seconds, ...) at that
point, so a resumed run goes on counting from there instead of losing or double-counting the work
of the steps it does not repeat.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from runtime.client import DataPlaneClient, Task

#: The largest page the control plane returns.
_MAX_PAGE = 100


class CheckpointStore(Protocol):
    """Where one run's checkpoints live; the bodies are the data-plane API's JSON shapes."""

    def put_checkpoint(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        """Store (or replace) one checkpoint."""
        ...

    def put_writes(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        """Store a task's writes against a checkpoint (regular ones once, special ones replaced)."""
        ...

    def list_checkpoints(self, *, checkpoint_ns: str, checkpoint_id: str | None, before: str | None,
                         limit: int) -> list[dict[str, Any]]:
        """Checkpoints newest first, each with its pending writes."""
        ...


class TaskCheckpointStore:
    """``CheckpointStore`` of a leased task, through the control plane (only its lease holder may use it)."""

    def __init__(self, client: DataPlaneClient, task: Task) -> None:
        self.client = client
        self.task = task

    def put_checkpoint(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        """Store one checkpoint."""
        self.client.put_checkpoint(self.task.task_id, self.task.lease_token, checkpoint_id, body)

    def put_writes(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        """Store pending writes."""
        self.client.put_checkpoint_writes(self.task.task_id, self.task.lease_token, checkpoint_id, body)

    def list_checkpoints(self, *, checkpoint_ns: str, checkpoint_id: str | None, before: str | None,
                         limit: int) -> list[dict[str, Any]]:
        """Read checkpoints back."""
        return self.client.list_checkpoints(self.task.task_id, self.task.lease_token, checkpoint_ns=checkpoint_ns,
                                            checkpoint_id=checkpoint_id, before=before, limit=limit)


class MemoryCheckpointStore:
    """``CheckpointStore`` in this process (local runs without a control plane, tests), with the
    control plane's semantics."""

    def __init__(self) -> None:
        self.checkpoints: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: dict[tuple[str, str], dict[tuple[str, int], dict[str, Any]]] = {}

    def put_checkpoint(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        """Store one checkpoint."""
        key = (str(body.get("checkpoint_ns", "")), checkpoint_id)
        self.checkpoints[key] = {"checkpoint_id": checkpoint_id, **body}

    def put_writes(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        """Store pending writes: regular ones once, special (negative index) ones replaced."""
        stored = self.writes.setdefault((str(body.get("checkpoint_ns", "")), checkpoint_id), {})
        for write in body["writes"]:
            key = (str(body["task_id"]), int(write["idx"]))
            if key[1] >= 0 and key in stored:
                continue
            stored[key] = {"task_id": body["task_id"], "task_path": body.get("task_path", ""), **write}

    def list_checkpoints(self, *, checkpoint_ns: str, checkpoint_id: str | None, before: str | None,
                         limit: int) -> list[dict[str, Any]]:
        """Checkpoints newest first, each with its writes in LangGraph's order."""
        ids = sorted((cid for ns, cid in self.checkpoints if ns == checkpoint_ns), reverse=True)
        if checkpoint_id is not None:
            ids = [cid for cid in ids if cid == checkpoint_id]
        if before is not None:
            ids = [cid for cid in ids if cid < before]
        found = []
        for cid in ids[:limit]:
            writes = self.writes.get((checkpoint_ns, cid), {})
            ordered = [writes[k] for k in sorted(writes, key=lambda k: (writes[k]["task_path"], k[0], k[1]))]
            found.append({**self.checkpoints[(checkpoint_ns, cid)], "writes": ordered})
        return found


def _blob(typed: tuple[str, bytes]) -> dict[str, str]:
    return {"type": typed[0], "data": base64.b64encode(typed[1]).decode()}


def _unblob(blob: Mapping[str, Any]) -> tuple[str, bytes]:
    return str(blob["type"]), base64.b64decode(blob["data"])


class RemoteCheckpointSaver(BaseCheckpointSaver[int]):
    """LangGraph ``BaseCheckpointSaver`` over a ``CheckpointStore``, for one run (thread).

    ``progress`` is read at every checkpoint and stored with it; ``latest_progress()`` gives the
    counters of the newest checkpoint back to a resumed run.
    """

    def __init__(self, store: CheckpointStore, *, run_id: str,
                 progress: Callable[[], Mapping[str, float]] | None = None,
                 serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self.store = store
        self.run_id = run_id
        self.progress = progress

    def _scope(self, config: RunnableConfig | None) -> tuple[str, str | None]:
        configurable = (config or {}).get("configurable") or {}
        thread_id = configurable.get("thread_id", self.run_id)
        if thread_id != self.run_id:
            raise ValueError(f"this checkpointer holds run {self.run_id}, not thread {thread_id!r}")
        return str(configurable.get("checkpoint_ns", "")), configurable.get("checkpoint_id")

    def _config(self, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": self.run_id, "checkpoint_ns": checkpoint_ns,
                                 "checkpoint_id": checkpoint_id}}

    def _tuple(self, item: Mapping[str, Any]) -> CheckpointTuple:
        ns, parent = str(item["checkpoint_ns"]), item.get("parent_checkpoint_id")
        return CheckpointTuple(
            config=self._config(ns, str(item["checkpoint_id"])),
            checkpoint=self.serde.loads_typed(_unblob(item["checkpoint"])),
            metadata=self.serde.loads_typed(_unblob(item["metadata"])),
            parent_config=self._config(ns, str(parent)) if parent else None,
            pending_writes=[(str(w["task_id"]), str(w["channel"]), self.serde.loads_typed(_unblob(w["value"])))
                            for w in item.get("writes") or ()],
        )

    # -- BaseCheckpointSaver -----------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named in ``config``, or the newest one of its namespace."""
        checkpoint_ns, checkpoint_id = self._scope(config)
        found = self.store.list_checkpoints(checkpoint_ns=checkpoint_ns, checkpoint_id=checkpoint_id, before=None,
                                            limit=1)
        return self._tuple(found[0]) if found else None

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, optionally before one, matching ``filter`` on their metadata."""
        checkpoint_ns, checkpoint_id = self._scope(config)
        before_id = self._scope(before)[1] if before else None
        wanted = _MAX_PAGE if filter or limit is None else min(limit, _MAX_PAGE)
        items = self.store.list_checkpoints(checkpoint_ns=checkpoint_ns, checkpoint_id=checkpoint_id,
                                            before=before_id, limit=wanted)
        yielded = 0
        for item in items:
            found = self._tuple(item)
            if filter and any(found.metadata.get(k) != v for k, v in filter.items()):
                continue
            yield found
            yielded += 1
            if limit is not None and yielded >= limit:
                return

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:  # noqa: ARG002 - stored whole, not per channel
        """Store a checkpoint (with the run's counters at this point); returns its config."""
        checkpoint_ns, parent_id = self._scope(config)
        self.store.put_checkpoint(checkpoint["id"], {
            "checkpoint_ns": checkpoint_ns,
            "parent_checkpoint_id": parent_id,
            "checkpoint": _blob(self.serde.dumps_typed(checkpoint)),
            "metadata": _blob(self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
            "progress": dict(self.progress()) if self.progress else {},
        })
        return self._config(checkpoint_ns, checkpoint["id"])

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        """Store the writes a task made after the checkpoint in ``config``."""
        checkpoint_ns, checkpoint_id = self._scope(config)
        if checkpoint_id is None:
            raise ValueError("writes belong to a checkpoint: the config has no checkpoint_id")
        self.store.put_writes(checkpoint_id, {
            "checkpoint_ns": checkpoint_ns, "task_id": task_id, "task_path": task_path,
            "writes": [{"idx": WRITES_IDX_MAP.get(channel, idx), "channel": channel,
                        "value": _blob(self.serde.dumps_typed(value))}
                       for idx, (channel, value) in enumerate(writes)],
        })

    # -- resuming --------------------------------------------------------------------------------
    def latest_progress(self) -> dict[str, float]:
        """The counters stored with the run's newest checkpoint (empty before the first)."""
        found = self.store.list_checkpoints(checkpoint_ns="", checkpoint_id=None, before=None, limit=1)
        return {str(k): float(v) for k, v in (found[0].get("progress") or {}).items()} if found else {}
