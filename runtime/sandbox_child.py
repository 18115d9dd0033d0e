"""A run's child process: runs the agent's graph with the ``Executor``, reaching the world only
through its parent over one socket (runtime/sandbox_protocol.py).

Forked from the zygote and confined (runtime/confine.py) before this runs. The parent sends one
``start`` message (the run's spec, where the package is, whether checkpoints and approvals are
on); the child answers with requests and notes until its ``outcome``:

* notes (no reply): ``log`` (a line), ``flush``;
* requests (the parent replies ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``):
  ``step`` (a step ended: the run's counters; the reply says whether to stop), ``tool`` (may this
  tool be called?), ``put_checkpoint``, ``put_writes``, ``list_checkpoints``, and the approval
  desk's ``decisions``, ``claim``, ``record``;
* ``outcome``: how the run ended (the parent measures CPU time itself and checks the rest).

Anything agent code prints goes to the run's log as lines of step ``stdout``/``stderr``.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

from runtime import sandbox_protocol as protocol
from runtime import usage
from runtime.executor import Executor, RunSpec, StopReason
from runtime.tools import ToolError


class RemoteError(Exception):
    """The parent refused a request; ``code`` says why (``stale_approval``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Channel:
    """The child's end: notes, and requests that wait for their reply (one at a time)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def note(self, op: str, **fields: Any) -> None:
        with self._lock:
            protocol.send(self.sock, {"op": op, **fields})

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            protocol.send(self.sock, {"op": op, **fields})
            reply = protocol.receive(self.sock)
        if not reply.get("ok"):
            raise RemoteError(str(reply.get("code", protocol.Refusal.REFUSED)),
                              str(reply.get("error", "refused by the runner")))
        return reply


class PipeLog:
    """``LogSink`` whose lines go to the parent."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def write(self, step: str, message: str, *, level: str = "info", fields: Mapping[str, Any] | None = None
              ) -> None:
        self.channel.note("log", step=str(step)[:200], message=str(message), level=str(level),
                          fields=dict(fields or {}))

    def flush(self) -> None:
        self.channel.note("flush")


class _Printed(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of agent code: each line becomes a log line."""

    def __init__(self, log: PipeLog, step: str, level: str) -> None:
        self.log, self.step, self.level, self._partial = log, step, level, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.log.write(self.step, line[:4000], level=self.level)
        return len(text)


class PipeCheckpoints:
    """``CheckpointStore`` through the parent."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def put_checkpoint(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        self.channel.call("put_checkpoint", checkpoint_id=checkpoint_id, body=dict(body))

    def put_writes(self, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        self.channel.call("put_writes", checkpoint_id=checkpoint_id, body=dict(body))

    def list_checkpoints(self, *, checkpoint_ns: str, checkpoint_id: str | None, before: str | None,
                         limit: int) -> list[dict[str, Any]]:
        reply = self.channel.call("list_checkpoints", checkpoint_ns=checkpoint_ns, checkpoint_id=checkpoint_id,
                                  before=before, limit=limit)
        return list(reply["checkpoints"])


class PipeDesk:
    """``DecisionDesk`` through the parent (the parent itself parks the calls the run stops at, from
    its outcome, with hashes it computes)."""

    def __init__(self, channel: Channel, *, agent_id: str, version: str, run_id: str) -> None:
        self.channel = channel
        self.agent_id, self.version, self.run_id = agent_id, version, run_id

    def decisions(self) -> list[dict[str, Any]]:
        return list(self.channel.call("decisions")["decisions"])

    def claim(self, approval_id: str, action_hash: str) -> dict[str, Any]:
        return dict(self.channel.call("claim", approval_id=approval_id, action_hash=action_hash)["claim"])

    def record(self, approval_id: str, outcome: Mapping[str, Any], saving_micros: int) -> None:
        self.channel.call("record", approval_id=approval_id, outcome=dict(outcome), saving_micros=saving_micros)


def refuse(sock: socket.socket, message: str) -> None:
    """Tell the parent the run cannot start (the sandbox failed)."""
    with contextlib.suppress(OSError):
        protocol.send(sock, {"op": "outcome", "status": "failed", "error": message, "metrics": {}})


def _quiet_fds() -> None:
    """Descriptors 0-2 to /dev/null: what agent code writes below ``sys.stdout`` goes nowhere."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def main(sock: socket.socket) -> int:
    """Serve one run; the exit code is 0 once an outcome was sent."""
    _quiet_fds()
    channel = Channel(sock)
    start = protocol.receive(sock)
    spec = RunSpec(**start["spec"])
    sys.path[:0] = [str(p) for p in start.get("sys_path") or ()]
    log = PipeLog(channel)
    sys.stdout = _Printed(log, "stdout", "info")
    sys.stderr = _Printed(log, "stderr", "warning")

    def should_stop() -> StopReason | None:
        progress = usage.progress_of(spec.run_id)
        reply = channel.call("step", progress=progress() if progress else {})
        return StopReason(reply["stop"]) if reply.get("stop") else None

    def guard(name: str) -> None:
        try:
            channel.call("tool", name=name)
        except RemoteError as exc:
            raise ToolError(str(exc)) from exc

    manifest = spec.manifest
    desk = PipeDesk(channel, agent_id=str(start.get("agent_id", "")), version=str(manifest.get("version", "")),
                    run_id=spec.run_id) if start.get("approvals") else None
    try:
        outcome = Executor().execute(spec, log=log, checkpoints=PipeCheckpoints(channel) if start.get("checkpoints")
                                     else None, should_stop=should_stop, approvals=desk, guard=guard,
                                     package_root=start.get("package_root"))
    except MemoryError:
        channel.note("outcome", status="failed", error="memory", metrics={})
        return 0
    channel.note("outcome", status=outcome.status, metrics=outcome.metrics, outputs=outcome.outputs,
                 error=outcome.error, retryable=outcome.retryable,
                 stop_reason=outcome.stop_reason.value if outcome.stop_reason else None)
    return 0
