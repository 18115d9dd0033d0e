"""The cost-anomaly agent's tools as plain functions, for the platform's tool registry.

The graph never calls these directly: it asks its ``AgentContext`` to ``call_tool(name, ...)``, and
the registry looks the name up in ``TOOLS``, checks that the deployment was granted the tool's
permissions, and runs it. Remediations are deliberately absent: the agent only *proposes* them (as
data in its outputs); the write tool ``compute.propose_remediation`` belongs to the approval flow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from cost_anomaly.focus import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    FocusRecord,
    read_focus_file,
)

#: Tool name, as the manifest's ``tools`` section lists it.
READ_FOCUS = "billing.read_focus"
#: Permission needed to read billing exports.
BILLING_READ = "billing:read"


class ToolSpec(NamedTuple):
    """A tool implementation and the permissions a deployment must hold to call it."""

    func: Callable[..., object]
    permissions: frozenset[str]


def read_focus(
    source: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[FocusRecord]:
    """Read every record of a FOCUS 1.0 CSV billing export.

    ``source`` is a local path, a ``file://`` URL or an ``http(s)://`` URL (at most ``max_bytes``
    downloaded, ``timeout_seconds`` per network operation). Raises ``FocusFormatError`` (with the
    row number) for malformed data and ``FocusSourceError`` when the source cannot be opened. A
    registry that returns results across a process boundary can send ``record.to_dict()`` for each
    record: the graph accepts either form.
    """
    return read_focus_file(source, max_bytes=max_bytes, timeout=timeout_seconds)


#: Tool name -> (implementation, required permissions); read-only so no caller can re-point a name.
TOOLS: Mapping[str, ToolSpec] = MappingProxyType({
    READ_FOCUS: ToolSpec(read_focus, frozenset({BILLING_READ})),
})
