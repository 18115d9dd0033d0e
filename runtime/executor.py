"""Executes one agent run: loads the agent's LangGraph graph and runs it step by step.

* The graph comes from the manifest's ``runtime.entrypoint`` (``module:callable``), imported with
  importlib. Only built-in agents run here, so only modules of the built-in agent packages
  (``BUILTIN_AGENT_PACKAGES``, installed with the platform from ``agents/<name>/``) are accepted;
  other agents ship as container images, which are out of scope for these workers.
* The agent's tools come from its package's ``tools.TOOLS`` mapping and go through the
  ``ToolRegistry``: only tools its manifest declares, only with the permissions the deployment
  was granted (default deny). A refused call is logged on the run and fails the step.
* The graph runs with LangGraph streaming (``stream_mode="updates"``), one step at a time, so the
  executor can stop between steps when the run is cancelled, its lease is lost, the worker shuts
  down or the manifest's timeout passes.
* With a checkpoint store, every step is checkpointed before the next one starts
  (``durability="sync"``) and a run delivered again resumes after its last completed step, its
  counters (records, CPU seconds, ...) restored from that checkpoint.
* CPU time is the executing thread's CPU clock (``pthread_getcpuclockid``): the graph's steps run
  in the thread that iterates the stream, so a worker process running several runs at once still
  measures each run apart. (Parallel branches of a graph run in LangGraph's own threads and are
  not counted.)
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from runtime import usage  # billing (issue 16)
from runtime.agent_context import CONFIGURABLE_KEY
from runtime.approvals import ApprovalGate, DecisionDesk, pending_actions, resume_command  # issue 15
from runtime.checkpointer import CheckpointStore, RemoteCheckpointSaver
from runtime.client import LogLine, Task
from runtime.tools import ToolError, ToolImplementation, ToolRegistry

_log = logging.getLogger(__name__)

#: Only built-in agents run here: the top-level packages of the agent packages the platform ships.
BUILTIN_AGENT_PACKAGES = frozenset({"cost_anomaly"})
#: Entrypoints of built-in versions published before the agents became packages of their own
#: (``cost-anomaly-detector`` 1.0.0): deployments pinned to them keep running the same code.
MOVED_ENTRYPOINTS: Mapping[str, str] = MappingProxyType({
    "runtime.agents.cost_anomaly.graph:build_graph": "cost_anomaly.graph:build_graph",
})
#: Counters a run reports (and checkpoints, to resume with).
COUNTERS = ("records_processed", "cpu_seconds", "duration_ms", "steps", "tool_calls")
RUN_STEP = "run"  # the step name of lines the executor itself writes


class StopReason(StrEnum):
    """Why the executor stopped a run between two steps."""

    CANCELLED = "cancelled"  # a user cancelled the run: reported as cancelled
    LEASE_LOST = "lease_lost"  # another worker has the run now: nothing is reported
    SHUTDOWN = "shutdown"  # the worker is stopping: the run is left for redelivery
    TIMEOUT = "timeout"  # the manifest's timeout passed: reported as failed


class AgentLoadError(Exception):
    """The manifest's entrypoint cannot be loaded here."""


class LogSink(Protocol):
    """Where a run's log lines go."""

    def write(self, step: str, message: str, *, level: str = "info", fields: Mapping[str, Any] | None = None
              ) -> None:
        """Record one line."""
        ...

    def flush(self) -> None:
        """Send what is buffered."""
        ...


class BufferedRunLog:
    """Numbers a run's lines (from the task's ``next_log_seq``) and sends them in batches.

    Lines go out when ``max_batch`` are buffered, when ``flush`` is called (the executor flushes
    after every step, the worker's lease keeper when ``due``), and at the end. Sending holds a lock
    so batches arrive in order; a batch that fails to send stays buffered for the next flush
    (numbered lines make the resend harmless) and the error goes to ``on_error`` (raised without one).
    """

    def __init__(self, send: Callable[[Sequence[LogLine]], object], *, first_seq: int = 1, max_batch: int = 100,
                 max_delay: float = 0.5, on_error: Callable[[Exception], None] | None = None) -> None:
        self._send = send
        self.on_error = on_error
        self._next_seq = first_seq
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._buffer: list[LogLine] = []
        self._oldest: float | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    def write(self, step: str, message: str, *, level: str = "info", fields: Mapping[str, Any] | None = None
              ) -> None:
        """Buffer one line (its fields made JSON); send the batch when it is full."""
        with self._lock:
            self._buffer.append(LogLine(seq=self._next_seq, step=step, message=message, level=level,
                                        fields=_json_safe(dict(fields or {}))))
            self._next_seq += 1
            if self._oldest is None:
                self._oldest = time.monotonic()
            full = len(self._buffer) >= self.max_batch
        if full:
            self.flush()

    def due(self) -> bool:
        """Whether the oldest buffered line has waited ``max_delay``."""
        with self._lock:
            return self._oldest is not None and time.monotonic() - self._oldest >= self.max_delay

    def flush(self) -> None:
        """Send everything buffered, in order."""
        with self._send_lock:
            with self._lock:
                lines, self._buffer, self._oldest = self._buffer, [], None
            if not lines:
                return
            try:
                self._send(lines)
            except Exception as exc:
                with self._lock:
                    self._buffer[:0] = lines
                    self._oldest = self._oldest or time.monotonic()
                if self.on_error is None:
                    raise
                self.on_error(exc)


class MemoryRunLog:
    """``LogSink`` that keeps the lines (local runs, benchmarks, tests)."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def write(self, step: str, message: str, *, level: str = "info", fields: Mapping[str, Any] | None = None
              ) -> None:
        """Keep one line."""
        self.lines.append(LogLine(seq=len(self.lines) + 1, step=step, message=message, level=level,
                                  fields=_json_safe(dict(fields or {}))))

    def flush(self) -> None:
        """Nothing to send."""


@dataclass(frozen=True)
class RunSpec:
    """What to run: the agent (from its manifest), its config and inputs, and the grants."""

    run_id: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    inputs: Mapping[str, Any]
    granted_permissions: Sequence[str]
    attempt: int = 1
    memory: Mapping[str, Any] = field(default_factory=dict)  # memory (issue 17): the run's memory context
    #: ``sha256:<hex>`` of the agent package the run executes (issue 14); None for a built-in agent
    package_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON (what the parent sends a run's child)."""
        return {"run_id": self.run_id, "manifest": dict(self.manifest), "config": dict(self.config),
                "inputs": dict(self.inputs), "granted_permissions": list(self.granted_permissions),
                "attempt": self.attempt, "memory": dict(self.memory), "package_digest": self.package_digest}

    @classmethod
    def from_task(cls, task: Task) -> RunSpec:
        """The spec of a leased task."""
        package = task.package or {}
        return cls(run_id=task.run_id, manifest=task.manifest, config=task.config, inputs=task.inputs,
                   granted_permissions=task.granted_permissions, attempt=task.attempt,
                   package_digest=f"sha256:{package['sha256']}" if package.get("sha256") else None)

    @property
    def entrypoint(self) -> str:
        """``module:callable`` returning the graph."""
        return str(self.manifest["runtime"]["entrypoint"])

    @property
    def timeout_seconds(self) -> float | None:
        """The manifest's run timeout."""
        value = (self.manifest.get("runtime") or {}).get("timeout_seconds")
        return float(value) if value else None


@dataclass
class Outcome:
    """How a run ended on this worker.

    ``status`` is what to report (``succeeded``, ``failed``, ``cancelled``) or ``abandoned``: the
    worker lost the run or is stopping, reports nothing, and the task is delivered again.
    """

    status: str
    metrics: dict[str, float]
    outputs: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = False
    stop_reason: StopReason | None = None

    @property
    def report_metrics(self) -> dict[str, Any]:
        """The metrics in the completion's shape (integral counters as integers)."""
        out: dict[str, Any] = {name: int(value) for name, value in self.metrics.items() if name != "cpu_seconds"}
        out["cpu_seconds"] = round(self.metrics.get("cpu_seconds", 0.0), 6)
        return out


def _thread_cpu_clock() -> Callable[[], float]:
    """A reader of the calling thread's CPU time that works from any thread."""
    if hasattr(time, "pthread_getcpuclockid"):
        clock = time.pthread_getcpuclockid(threading.get_ident())
        return lambda: time.clock_gettime(clock)
    owner = threading.get_ident()
    last = [time.thread_time()]

    def read() -> float:  # elsewhere: exact in the owning thread, the last reading from others
        if threading.get_ident() == owner:
            last[0] = time.thread_time()
        return last[0]
    return read


@dataclass
class RunContext:
    """The ``AgentContext`` the graph's nodes get in ``config["configurable"]["agent"]``."""

    spec: RunSpec
    tools: ToolRegistry
    sink: LogSink
    restored: Mapping[str, float] = field(default_factory=dict)
    current_step: str = RUN_STEP
    gate: ApprovalGate | None = None  # issue 15: gated (remediation) calls wait for a human decision
    #: issue 14: asks the run's parent whether a tool call may go ahead (raises ``ToolError`` if not)
    guard: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.records = int(self.restored.get("records_processed", 0))
        self.tool_calls = int(self.restored.get("tool_calls", 0))
        self.steps = int(self.restored.get("steps", 0))
        self._cpu = _thread_cpu_clock()
        self._cpu_start = self._cpu()
        self._wall_start = time.monotonic()
        self._config = MappingProxyType(dict(self.spec.config))
        self._inputs = MappingProxyType(dict(self.spec.inputs))

    # -- AgentContext ------------------------------------------------------------------------------
    def log(self, step: str, message: str, **fields: object) -> None:
        """A structured line for ``step``."""
        self.current_step = step
        self.sink.write(step, message, fields=fields)

    def call_tool(self, name: str, **arguments: object) -> object:
        """Run a tool if the deployment was granted what it needs; a refusal is logged and raised."""
        if self.gate is not None and self.gate.handles(name):  # issue 15: the approval gate decides
            self.tool_calls += 1
            known = self.tools.names
            return self.gate.call(name, dict(arguments), self.tools.check(name).func if name in known else None)
        try:
            tool = self.tools.check(name)
            if self.guard is not None:
                self.guard(name)
        except ToolError as exc:
            self.sink.write(self.current_step, f"Tool call refused: {exc}", level="error",
                            fields={"tool": name, "error_type": type(exc).__name__,
                                    "missing_permissions": getattr(exc, "missing", [])})
            raise
        self.tool_calls += 1
        return tool.func(**arguments)

    @property
    def config(self) -> Mapping[str, object]:
        """The deployment's config (read-only)."""
        return self._config

    @property
    def inputs(self) -> Mapping[str, object]:
        """The run's inputs (read-only)."""
        return self._inputs

    def count_records(self, n: int) -> None:
        """Count processed records (billed per record)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("count_records takes a non-negative integer")
        self.records += n

    # -- counters -------------------------------------------------------------------------------
    def progress(self) -> dict[str, float]:
        """The run's counters now, over every attempt that reached a checkpoint."""
        return {
            "records_processed": float(self.records),
            "cpu_seconds": float(self.restored.get("cpu_seconds", 0.0)) + self._cpu() - self._cpu_start,
            "duration_ms": float(self.restored.get("duration_ms", 0.0))
            + (time.monotonic() - self._wall_start) * 1000.0,
            "steps": float(self.steps),
            "tool_calls": float(self.tool_calls),
        }


def _builtin_module(entrypoint: str, package_root: str | None = None) -> tuple[str, str]:
    """``(module, callable)`` of an agent's entrypoint: a module of its package (issue 14) when the
    run has one, else of a built-in agent; ``AgentLoadError`` for any other."""
    module_name, _, attribute = MOVED_ENTRYPOINTS.get(entrypoint, entrypoint).partition(":")
    if package_root is not None:
        top = module_name.partition(".")[0]
        root = Path(package_root)
        if not attribute or not top.isidentifier() or not ((root / top).is_dir() or (root / f"{top}.py").is_file()):
            raise AgentLoadError(f"entrypoint {entrypoint!r}: its module must be part of the agent's package")
        return module_name, attribute
    if not attribute or module_name.partition(".")[0] not in BUILTIN_AGENT_PACKAGES:
        raise AgentLoadError(f"entrypoint {entrypoint!r}: this data plane runs built-in agents only (modules of "
                             f"{', '.join(sorted(BUILTIN_AGENT_PACKAGES))}); other agents run from their "
                             "container image")
    return module_name, attribute


def load_entrypoint(entrypoint: str, package_root: str | None = None) -> Callable[[], Any]:
    """The graph factory named by ``module:callable`` (of the run's package, or a built-in agent)."""
    module_name, attribute = _builtin_module(entrypoint, package_root)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise AgentLoadError(f"entrypoint {entrypoint!r} cannot be loaded: {exc}") from exc
    if not callable(factory):
        raise AgentLoadError(f"entrypoint {entrypoint!r} is not callable")
    return factory  # type: ignore[no-any-return]


def agent_tools(entrypoint: str, package_root: str | None = None) -> Mapping[str, ToolImplementation]:
    """The ``TOOLS`` mapping of the agent package's ``tools`` module (none if it has none)."""
    package = _builtin_module(entrypoint, package_root)[0].partition(".")[0]
    try:
        module = importlib.import_module(f"{package}.tools")
    except ModuleNotFoundError as exc:
        if exc.name == f"{package}.tools":
            return {}
        raise
    tools: Mapping[str, ToolImplementation] = getattr(module, "TOOLS", {})
    return tools


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: network trouble anywhere in the cause chain, or an
    exception that says so with a ``retryable`` attribute."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        flag = getattr(current, "retryable", None)
        if isinstance(flag, bool):
            return flag
        if isinstance(current, urllib.error.HTTPError):
            return current.code in (408, 429) or current.code >= 500
        if isinstance(current, ConnectionError | TimeoutError | urllib.error.URLError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class Executor:
    """Runs agents; one instance serves any number of runs (it keeps no per-run state)."""

    def execute(self, spec: RunSpec, *, log: LogSink, checkpoints: CheckpointStore | None = None,  # noqa: PLR0915
                should_stop: Callable[[], StopReason | None] = lambda: None,
                approvals: DecisionDesk | None = None, guard: Callable[[str], None] | None = None,
                package_root: str | None = None, stop_grace: Callable[[], float | None] | None = None) -> Outcome:
        """Run ``spec`` to its end, or to the first step boundary where ``should_stop`` says so.

        In a run's child (runtime/sandbox_child.py) ``guard`` asks the parent before each tool call
        and ``package_root`` is the agent package's extracted project (first on ``sys.path``).
        ``stop_grace`` is the sandbox's (runtime/sandbox.py): in this process a step cannot be
        interrupted, so it is not used here."""
        del stop_grace
        try:
            factory = load_entrypoint(spec.entrypoint, package_root)
            registry = ToolRegistry.for_agent(spec.manifest, agent_tools(spec.entrypoint, package_root),
                                              spec.granted_permissions)
            built = factory()
        except Exception as exc:  # noqa: BLE001 - any failure to build the agent fails the run
            log.write(RUN_STEP, f"Cannot load the agent: {exc}", level="error")
            log.flush()
            return Outcome("failed", dict.fromkeys(COUNTERS, 0.0), error=f"{type(exc).__name__}: {exc}")

        context_box: list[RunContext] = []
        saver = None
        if checkpoints is not None:
            saver = RemoteCheckpointSaver(checkpoints, run_id=spec.run_id,
                                          progress=lambda: context_box[0].progress() if context_box else {})
        restored = saver.latest_progress() if saver is not None else {}
        context = RunContext(spec, registry, log, restored, guard=guard)
        if approvals is not None and saver is not None:  # issue 15: gated calls need checkpoints to wait
            context.gate = ApprovalGate(spec.manifest, approvals, registry.granted, digest=spec.package_digest,
                                        on_log=lambda message, fields:
                                        log.write(context.current_step, message, level="warning", fields=fields))
        context_box.append(context)
        usage.publish(spec.run_id, context.progress)  # billing (issue 16): read by the usage heartbeat
        graph = built.compile(checkpointer=saver) if hasattr(built, "compile") else built
        config: RunnableConfig = {"configurable": {"thread_id": spec.run_id, CONFIGURABLE_KEY: context,
                                                   "memory": spec.memory}}  # memory (issue 17)
        deadline = time.monotonic() + spec.timeout_seconds if spec.timeout_seconds else None

        values: dict[str, Any] = {}
        graph_input: dict[str, Any] | Command[Any] | None = {}
        finished_before = False
        if saver is not None and restored:
            snapshot = graph.get_state(config)
            values = dict(snapshot.values or {})
            graph_input = None
            if context.gate is not None:  # issue 15: answer the approvals the run stopped at
                graph_input = resume_command(graph, config, context.gate.desk)
            finished_before = not snapshot.next
            # The checkpoint is written before its step is streamed, so its own step count lags by
            # one; LangGraph's superstep number (the input is step -1, START step 0) does not.
            context.steps = max(0, int((snapshot.metadata or {}).get("step", 0)))
            log.write(RUN_STEP, f"Resuming attempt {spec.attempt} from the last checkpoint",
                      fields={"next": list(snapshot.next), "records_processed": context.records})
        stop: StopReason | None = None
        try:
            if not finished_before:
                stream: Iterator[tuple[str, Any]] = graph.stream(
                    graph_input, config, stream_mode=["updates", "values"],
                    **({"durability": "sync"} if saver is not None else {}))
                with contextlib.closing(stream):  # type: ignore[type-var]
                    for mode, chunk in stream:
                        if mode == "values":
                            values = dict(chunk)
                            continue
                        context.steps += 1
                        log.flush()
                        stop = should_stop()
                        if stop is None and deadline is not None and time.monotonic() > deadline:
                            stop = StopReason.TIMEOUT
                        if stop is not None:
                            break
        except Exception as exc:  # noqa: BLE001 - an agent's failure is the run's outcome
            retryable = is_retryable(exc)
            log.write(context.current_step, f"Step failed: {type(exc).__name__}: {exc}", level="error",
                      fields={"error_type": type(exc).__name__, "retryable": retryable})
            log.flush()
            return Outcome("failed", context.progress(), error=f"{type(exc).__name__}: {exc}", retryable=retryable)
        if stop is None and context.gate is not None:  # issue 15: stopped at gated calls: wait for approval
            actions = pending_actions(graph, config)
            if actions:
                log.write(RUN_STEP, f"Waiting for approval of {len(actions)} action(s)",
                          fields={"tools": [a["tool"] for a in actions]})
                log.flush()
                return Outcome("awaiting_approval", context.progress(), outputs={"actions": actions})
        return self._ended(spec, context, log, values, stop)

    @staticmethod
    def _ended(spec: RunSpec, context: RunContext, log: LogSink, values: dict[str, Any],
               stop: StopReason | None) -> Outcome:
        metrics = context.progress()
        if stop == StopReason.CANCELLED:
            log.write(RUN_STEP, "Run cancelled between steps", level="warning", fields={"steps": context.steps})
            log.flush()
            return Outcome("cancelled", metrics, error="cancelled on request", stop_reason=stop)
        if stop == StopReason.TIMEOUT:
            log.write(RUN_STEP, f"Run timed out after {spec.timeout_seconds:g} s", level="error")
            log.flush()
            return Outcome("failed", metrics, error=f"timed out after {spec.timeout_seconds:g} s", stop_reason=stop)
        if stop is not None:
            log.flush()
            return Outcome("abandoned", metrics, stop_reason=stop)
        outputs = values.get("outputs") if isinstance(values.get("outputs"), dict) else values
        log.flush()
        return Outcome("succeeded", metrics, outputs=_json_safe(outputs))
