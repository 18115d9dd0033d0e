"""The interface a running agent's graph nodes use to reach the platform.

Graph nodes never read files, environment variables or credentials themselves: the data plane hands
them an ``AgentContext`` in ``config["configurable"]["agent"]``. Everything a node does that the
platform must see — structured step logs, tool calls (which the tool registry permission-checks and
audits), billable record counts — goes through it. Keeping the port this small lets a test run a
real LangGraph graph with a tiny in-memory implementation, and lets the SaaS and BYOC data planes
provide their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

#: The key under ``config["configurable"]`` where the data plane puts the agent context.
CONFIGURABLE_KEY = "agent"


@runtime_checkable
class AgentContext(Protocol):
    """What a graph node may ask of the platform during one agent run."""

    def log(self, step: str, message: str, **fields: object) -> None:
        """Append a structured log line for ``step`` (a node name); ``fields`` must be JSON values."""
        ...

    def call_tool(self, name: str, **arguments: object) -> object:
        """Invoke the registered tool ``name`` after the registry has checked its permissions."""
        ...

    @property
    def config(self) -> Mapping[str, object]:
        """The deployment's configuration (validated against the manifest's ``config`` schema)."""
        ...

    @property
    def inputs(self) -> Mapping[str, object]:
        """This run's inputs (validated against the manifest's ``inputs`` schema)."""
        ...

    def count_records(self, n: int) -> None:
        """Add ``n`` to the run's processed-record count, which per-record pricing bills."""
        ...
