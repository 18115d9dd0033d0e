"""The data plane's side of memory (issue 17, Flow 4): load before a run, store after it.

Before a run the worker asks the control plane (with its data-plane key and the task's lease) for
the run's memory context: the control plane builds it from the levels and Level 3 namespaces the
agent's manifest declares, for the run's own org only, within the token budget. The context
reaches the graph in ``config["configurable"]["memory"]`` (``MEMORY_KEY``): ``items`` (each with
``level``, ``content``, ``metadata``) and ``preferences`` (Level 5).

After the run the worker stores what it learned: a task summary (Level 2) and one episode
(Level 4: what the run proposed and how it ended). Memory never decides a run's fate: a failure
to load or store is logged and the run goes on without it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from runtime.client import ControlPlaneError, DataPlaneClient, Task

_log = logging.getLogger("marketplace.memory")

#: The key under ``config["configurable"]`` where the graph finds its memory context.
MEMORY_KEY = "memory"
_MAX_PROPOSALS = 50


def declared_levels(manifest: Mapping[str, Any]) -> list[int]:
    """The memory levels an agent's manifest declares."""
    memory = manifest.get("memory") or {}
    return [int(level) for level in memory.get("levels") or []]


def context_query(task: Task) -> str:
    """What the run is about, as a search query: the agent's name and description, its inputs."""
    manifest = task.manifest
    inputs = json.dumps(task.inputs, sort_keys=True, default=str)[:1000]
    return f"{manifest.get('name', '')}: {manifest.get('description', '')} inputs {inputs}".strip()


def load(client: DataPlaneClient, task: Task) -> dict[str, Any]:
    """The run's memory context, or an empty one (no level declared, or the call failed)."""
    if not declared_levels(task.manifest):
        return {}
    try:
        return client.memory_context(task, query=context_query(task))
    except ControlPlaneError as exc:
        _log.warning("run %s: loading memory failed; running without it: %s", task.run_id, exc)
        return {}


def learned(task: Task, status: str, outputs: Mapping[str, Any] | None, error: str | None
            ) -> tuple[str, list[dict[str, Any]]]:
    """The summary and the episode of a finished run, from its outcome."""
    name = str(task.manifest.get("name", task.agent_id))
    outputs = outputs or {}
    headline = outputs.get("summary")
    summary = f"Run of {name} {status}"
    if isinstance(headline, Mapping):
        summary += ": " + ", ".join(f"{k}={headline[k]}" for k in sorted(headline))
    elif error:
        summary += f": {error[:500]}"
    proposals = [p for p in outputs.get("proposals") or [] if isinstance(p, Mapping)][:_MAX_PROPOSALS]
    described = "; ".join(f"{p.get('action')} on {json.dumps(p.get('target'), sort_keys=True)}"
                          f" (action {p.get('action_id')})" for p in proposals)
    episode = {
        "content": (f"{name} run {status}; proposed {len(proposals)} remediations" + (f": {described}" if described
                                                                                       else "")),
        "metadata": {"outcome": status, "proposed": [str(p.get("action_id")) for p in proposals]},
    }
    return summary, [episode]


def store(client: DataPlaneClient, task: Task, status: str, outputs: Mapping[str, Any] | None,
          error: str | None) -> list[str]:
    """Store the run's summary and episode (the control plane keeps only the declared levels)."""
    levels = declared_levels(task.manifest)
    if not {2, 4} & set(levels) or status not in {"succeeded", "failed"}:
        return []
    summary, episodes = learned(task, status, outputs, error)
    try:
        return client.store_memory(task, summary=summary, episodes=episodes)
    except ControlPlaneError as exc:
        _log.warning("run %s: storing what it learned failed: %s", task.run_id, exc)
        return []
