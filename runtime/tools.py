"""The tool registry: every tool call an agent makes is checked against what the org granted.

A tool is callable in a run only when

1. the agent implements it (its package's ``tools.TOOLS`` mapping: name -> implementation with
   the permissions the code needs),
2. the agent's manifest declares it (``tools[].name``; the permissions listed there count too), and
3. every permission it needs was granted to the deployment at install (or by a consented upgrade).

Anything else is refused — default deny: an unknown or undeclared tool raises ``UnknownTool``, a
tool missing a grant raises ``ToolPermissionDenied`` before its code runs. The executor logs the
refusal on the run and the step (and with it the run) fails, non-retryably: another attempt would
be refused the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class ToolError(Exception):
    """A tool call the registry refused."""

    retryable = False


class UnknownTool(ToolError, LookupError):
    """No such tool in this run: not implemented by the agent, or not declared in its manifest."""


class ToolPermissionDenied(ToolError, PermissionError):
    """The deployment was not granted a permission the tool needs."""

    def __init__(self, tool: str, missing: Iterable[str], granted: Iterable[str]) -> None:
        self.tool = tool
        self.missing = sorted(missing)
        self.granted = sorted(granted)
        super().__init__(f"tool {tool!r} needs permission {', '.join(self.missing)}, which this deployment "
                         f"was not granted (granted: {', '.join(self.granted) or 'none'})")


class ToolImplementation(Protocol):
    """What an agent's ``TOOLS`` mapping holds per tool (e.g. a ``NamedTuple(func, permissions)``)."""

    @property
    def func(self) -> Callable[..., object]:
        """The tool's code."""
        ...

    @property
    def permissions(self) -> frozenset[str]:
        """The permissions the code needs."""
        ...


@dataclass(frozen=True)
class Tool:
    """A registered tool and every permission it needs."""

    name: str
    func: Callable[..., object]
    permissions: frozenset[str]


class ToolRegistry:
    """The tools of one run and the permissions granted to its deployment."""

    def __init__(self, granted: Iterable[str]) -> None:
        self.granted = frozenset(granted)
        self._tools: dict[str, Tool] = {}

    def register(self, name: str, func: Callable[..., object], permissions: Iterable[str]) -> None:
        """Add a tool; registering a name twice is an error."""
        if name in self._tools:
            raise ValueError(f"tool {name!r} registered twice")
        self._tools[name] = Tool(name, func, frozenset(permissions))

    @classmethod
    def for_agent(cls, manifest: Mapping[str, Any], implementations: Mapping[str, ToolImplementation],
                  granted: Iterable[str]) -> ToolRegistry:
        """The registry of a run: the agent's implemented tools that its manifest declares, each
        needing the union of the permissions its code and its manifest entry name."""
        registry = cls(granted)
        declared = {str(entry["name"]): frozenset(entry.get("permissions") or ())
                    for entry in manifest.get("tools") or ()}
        for name, implementation in implementations.items():
            if name in declared:
                registry.register(name, implementation.func, implementation.permissions | declared[name])
        return registry

    @property
    def names(self) -> list[str]:
        """The registered tools."""
        return sorted(self._tools)

    def check(self, name: str) -> Tool:
        """The tool, if this run may call it; raises ``UnknownTool`` or ``ToolPermissionDenied``."""
        tool = self._tools.get(name)
        if tool is None:
            raise UnknownTool(f"tool {name!r} is not available to this agent (implemented and declared in its "
                              f"manifest: {', '.join(self.names) or 'none'})")
        missing = tool.permissions - self.granted
        if missing:
            raise ToolPermissionDenied(name, missing, self.granted)
        return tool

    def call(self, name: str, /, **arguments: object) -> object:
        """Run a tool after the permission check."""
        return self.check(name).func(**arguments)
