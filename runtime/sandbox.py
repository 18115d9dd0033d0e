"""Runs each agent run in a child process of its own, never inside the worker (issue 14).

``SandboxExecutor`` has the ``Executor``'s interface. For each run it

1. installs the run's agent package when it has one (``PackageCache``: fetched by digest from the
   control plane, verified, installed once per digest);
2. has the zygote (runtime/zygote.py) fork a child, which confines itself (runtime/confine.py: its
   own uid, private working directory, read-only everything else, no network unless granted,
   resource limits, empty environment) and runs the graph with the ``Executor``;
3. serves the child over one socket (runtime/sandbox_protocol.py): its log lines go to the run's
   log, its checkpoints to the checkpoint store, each tool call is checked here against the
   manifest and the deployment's grants (default deny), approval decisions and claims go to the
   control plane, and the gated calls it stops at are rebuilt and hashed here before they are
   reported (runtime/approvals.py ``bound_action``);
4. measures the child's CPU time itself (``/proc`` while it runs, ``wait4`` when it ends), stops it
   at a step boundary on cancel, shutdown or timeout, and kills its whole uid when it does not stop
   within ``stop_grace`` seconds, or when the run ends.

Nothing the worker holds — the data-plane key, the platform's settings — is reachable from the
child: the zygote started with an environment free of them, the worker is not dumpable (its
``/proc`` files are root's), and the child runs as another user.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import confine, usage
from runtime import sandbox_protocol as protocol
from runtime.approvals import ApprovalDesk, bound_action, package_digest
from runtime.checkpointer import CheckpointStore, RemoteCheckpointSaver
from runtime.executor import COUNTERS, RUN_STEP, LogSink, Outcome, RunSpec, StopReason
from runtime.packages import InstalledPackage, PackageCache, PackageUnavailable

_log = logging.getLogger("marketplace.sandbox")

#: The permission that lets a run's child use the network (default: none at all).
NETWORK_PERMISSION = "network:egress"
NO_NETWORK_CONSTRAINT = "no-external-network"
UID_BASE = 2_000_000
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``1G``, ``1000000``) in bytes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kKmMgGtT]i?)?", str(quantity).strip())
    if not match:
        raise ValueError(f"memory quantity {quantity!r} is not understood")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


@dataclass(frozen=True)
class SandboxOptions:
    """Where runs work and what they must not see."""

    root: Path = field(default_factory=lambda: Path(os.environ.get("MARKETPLACE_SANDBOX_DIR") or Path(
        tempfile.gettempdir()) / f"marketplace-sandbox-{os.geteuid()}"))
    #: folders the child must not see (the runner's data directory): ``MARKETPLACE_SANDBOX_HIDE``
    hide: tuple[str, ...] = field(default_factory=lambda: tuple(
        p for p in os.environ.get("MARKETPLACE_SANDBOX_HIDE", "").split(os.pathsep) if p))
    stop_grace: float = 5.0  # seconds a child has to stop at a step boundary before it is killed
    default_memory: str = "512Mi"
    max_processes: int = 64
    max_file_bytes: int = 64 * 1024 * 1024


@dataclass
class _Exit:
    status: int
    cpu_seconds: float
    maxrss_kib: int


class Zygote:
    """A handle on a zygote process (started on first use, restarted if it died); ``shared()`` is
    the one every executor of this process uses."""

    _shared: Zygote | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> Zygote:
        """This process's zygote."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._refs = itertools.count(1)
        self._replies: dict[Any, dict[str, Any]] = {}
        self._exits: dict[int, _Exit] = {}
        self._cond = threading.Condition()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join(paths)}
        self._proc = subprocess.Popen([sys.executable, "-m", "runtime.zygote", str(theirs.fileno())],  # noqa: S603
                                      pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
                                      start_new_session=True, cwd="/")
        theirs.close()
        ready = json.loads(ours.recv(65536) or b"{}")
        if ready.get("op") != "ready":
            raise RuntimeError("the sandbox zygote did not start")
        self._control = ours
        threading.Thread(target=self._read, args=(ours,), daemon=True, name="zygote-reader").start()

    def _read(self, control: socket.socket) -> None:
        while True:
            try:
                data = control.recv(65536)
            except OSError:
                data = b""
            with self._cond:
                if not data:
                    if self._control is control:
                        self._control = None
                    self._cond.notify_all()
                    return
                message = json.loads(data)
                if message.get("op") == "exited":
                    self._exits[int(message["pid"])] = _Exit(int(message["status"]), float(message["cpu_seconds"]),
                                                             int(message["maxrss_kib"]))
                else:
                    self._replies[message.get("ref")] = message
                self._cond.notify_all()

    def spawn(self, confinement: Mapping[str, Any], run_socket: socket.socket) -> int:
        """Fork a confined child serving ``run_socket``; its pid."""
        with self._lock:
            if self._control is None:
                self._start()
            assert self._control is not None
            ref = next(self._refs)
            socket.send_fds(self._control, [json.dumps({"op": "spawn", "ref": ref,
                                                        "confinement": dict(confinement)}).encode()],
                            [run_socket.fileno()])
        with self._cond:
            if not self._cond.wait_for(lambda: ref in self._replies or self._control is None, timeout=30):
                raise RuntimeError("the sandbox zygote did not answer")
            reply = self._replies.pop(ref, None)
        if reply is None or reply.get("op") != "spawned":
            raise RuntimeError(f"the sandbox zygote could not start the run: {reply}")
        return int(reply["pid"])

    def reap_uid(self, uid: int) -> None:
        """Kill every process of that uid."""
        with self._lock:
            if self._control is not None:
                self._control.send(json.dumps({"op": "reap_uid", "uid": uid}).encode())

    def wait_exit(self, pid: int, timeout: float) -> _Exit | None:
        """How the child ended (None if it has not within ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self._control is None, timeout=timeout)
            return self._exits.pop(pid, None)

    def close(self) -> None:
        """Stop the zygote (and with it any child still running)."""
        with self._lock:
            control, self._control = self._control, None
            if control is not None:
                control.close()
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                    self._proc.wait()


def _stop_reason(value: Any) -> StopReason | None:
    """The child's stop reason when it names one (the child is not trusted to)."""
    try:
        return StopReason(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _cpu_of(pid: int) -> float:
    """CPU seconds of a live process and its reaped children (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / _CLOCK_TICKS


class _Grants:
    """The parent's own tool check: declared in the manifest, every permission it needs granted."""

    def __init__(self, manifest: Mapping[str, Any], granted: Sequence[str]) -> None:
        self.granted = frozenset(granted)
        self.declared = {str(t["name"]): frozenset(t.get("permissions") or ()) for t in manifest.get("tools") or ()}

    def refusal(self, name: str) -> str | None:
        if name not in self.declared:
            return f"tool {name!r} is not declared in the agent's manifest"
        missing = self.declared[name] - self.granted
        if missing:
            return f"tool {name!r} needs permissions not granted to this deployment: {', '.join(sorted(missing))}"
        return None


@dataclass
class _Run:
    spec: RunSpec
    log: LogSink
    checkpoints: CheckpointStore | None
    approvals: ApprovalDesk | None
    grants: _Grants
    digest: str
    pid: int = 0
    restored: dict[str, float] = field(default_factory=dict)
    progress: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    tool_calls: int = 0

    def cpu_now(self) -> float:
        return _cpu_of(self.pid)


class SandboxExecutor:
    """Executes runs in confined child processes (see the module docstring)."""

    _announced: dict[str, bool] | None = None
    #: Each run of this process has a uid of its own: ``UID_BASE + (pid % 100000) * 100 + slot``.
    _slots_free = list(range(100))
    _slots_lock = threading.Lock()

    def __init__(self, options: SandboxOptions | None = None, *, fetch_package: Callable[[str], bytes] | None = None,
                 zygote: Zygote | None = None) -> None:
        self.options = options or SandboxOptions()
        self.packages = PackageCache(self.options.root / "packages", fetch_package)
        self.zygote = zygote or Zygote.shared()
        self.capabilities = self._announce()
        confine.make_undumpable()

    @classmethod
    def _announce(cls) -> dict[str, bool]:
        if cls._announced is not None:
            return cls._announced
        capabilities = cls._announced = confine.supported()  # said once per process, at the first run's start
        if not capabilities["root"]:
            _log.warning("agent code runs under the runner's own uid: run the runner as root to give each run "
                         "an unprivileged user of its own")
        if not capabilities["network_namespace"]:
            _log.warning("this runner cannot create network namespaces: agent code has the runner's network "
                         "access whatever its manifest grants")
        return capabilities

    def close(self) -> None:
        """Stop the zygote."""
        self.zygote.close()

    # -- one run -----------------------------------------------------------------------------------
    @classmethod
    def _take_slot(cls) -> int:
        with cls._slots_lock:
            if not cls._slots_free:
                raise RuntimeError("this runner process runs 100 agents at once already")
            return cls._slots_free.pop(0)

    @classmethod
    def _give_slot(cls, slot: int) -> None:
        with cls._slots_lock:
            cls._slots_free.append(slot)

    def _uid(self, slot: int) -> int | None:
        return UID_BASE + (os.getpid() % 100_000) * 100 + slot if self.capabilities["root"] else None

    def _workdir(self, run_id: str, uid: int | None) -> Path:
        runs = self.options.root / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        for folder in (self.options.root, runs):
            os.chmod(folder, 0o755)  # noqa: S103 - runs execute under other uids and must read it
        workdir = Path(tempfile.mkdtemp(prefix=f"{re.sub(r'[^A-Za-z0-9_-]', '_', run_id)[:40]}-", dir=runs))
        if uid is not None:
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        return workdir

    def _confinement(self, spec: RunSpec, workdir: Path, uid: int | None, package: InstalledPackage | None
                     ) -> dict[str, Any]:
        manifest = spec.manifest
        runtime_section = manifest.get("runtime") or {}
        timeout = float(runtime_section.get("timeout_seconds") or 3600)
        memory = memory_bytes((runtime_section.get("resources") or {}).get("memory") or self.options.default_memory)
        network = (NETWORK_PERMISSION in spec.granted_permissions
                   and NO_NETWORK_CONSTRAINT not in (manifest.get("constraints") or ()))
        keep = [p for p in sys.path if p and os.path.isdir(p)] + [sys.prefix, sys.base_prefix]
        if package is not None:
            keep.append(str(package.root))
        hide = [*self.options.hide, os.path.expanduser("~")]
        return {"workdir": str(workdir), "network": network, "uid": uid,
                "hide": [h for h in hide
                         if h and h != "/" and not str(self.options.root).startswith(h.rstrip("/") + "/")],
                "keep": keep,
                "limits": {"memory_bytes": memory, "cpu_seconds": int(timeout + self.options.stop_grace) + 5,
                           "processes": self.options.max_processes if uid is not None else 1 << 20,
                           "file_bytes": self.options.max_file_bytes, "open_files": 256}}

    def execute(self, spec: RunSpec, *, log: LogSink, checkpoints: CheckpointStore | None = None,
                should_stop: Callable[[], StopReason | None] = lambda: None,
                approvals: ApprovalDesk | None = None, package_dir: Path | None = None,
                stop_grace: Callable[[], float | None] | None = None) -> Outcome:
        """Run ``spec`` in a confined child; ``package_dir`` runs an unpacked project (``agent run``).

        ``stop_grace``, asked when ``should_stop`` first says stop, may shorten the seconds the
        child has to reach a step boundary before it is killed (None: ``SandboxOptions.stop_grace``;
        the worker shortens it for a run stopped at its maximum charge)."""
        zeros = dict.fromkeys(COUNTERS, 0.0)
        try:
            package = (self.packages.ensure(spec.package_digest.removeprefix("sha256:")) if spec.package_digest
                       else None)
        except PackageUnavailable as exc:
            log.write(RUN_STEP, f"Cannot install the agent's package: {exc}", level="error")
            log.flush()
            return Outcome("failed", zeros, error=str(exc), retryable=exc.retryable)
        if package is None and package_dir is not None:
            package = InstalledPackage(package_dir, package_dir, (str(package_dir),))
        run = _Run(spec, log, checkpoints, approvals, _Grants(spec.manifest, spec.granted_permissions),
                   spec.package_digest or package_digest(spec.manifest))
        if checkpoints is not None:
            run.restored = RemoteCheckpointSaver(checkpoints, run_id=spec.run_id, progress=dict).latest_progress()
        slot = self._take_slot()
        try:
            return self._execute(run, package, slot, should_stop, stop_grace)
        finally:
            self._give_slot(slot)

    def _execute(self, run: _Run, package: InstalledPackage | None, slot: int,
                 should_stop: Callable[[], StopReason | None],
                 stop_grace: Callable[[], float | None] | None = None) -> Outcome:
        spec, log, checkpoints, approvals = run.spec, run.log, run.checkpoints, run.approvals
        uid = self._uid(slot)
        workdir = self._workdir(spec.run_id, uid)
        ours, theirs = socket.socketpair()
        usage.publish(spec.run_id, lambda: self._progress(run))
        try:
            confinement = self._confinement(spec, workdir, uid, package)
            run.pid = self.zygote.spawn(confinement, theirs)
            theirs.close()
            protocol.send(ours, {"op": "start", "spec": spec.to_json(), "agent_id": getattr(approvals, "agent_id", ""),
                                 "version": getattr(approvals, "version", spec.manifest.get("version", "")),
                                 "sys_path": list(package.paths) if package else [],
                                 "package_root": str(package.project) if package else None,
                                 "checkpoints": checkpoints is not None, "approvals": approvals is not None})
            outcome = self._serve(run, ours, should_stop, confinement, stop_grace)
        finally:
            ours.close()
            theirs.close()
            if run.pid:
                self._end(run, uid)
            shutil.rmtree(workdir, ignore_errors=True)
        if run.pid:
            exit_info = self.zygote.wait_exit(run.pid, timeout=5.0)
            if exit_info is not None:
                outcome.metrics["cpu_seconds"] = run.restored.get("cpu_seconds", 0.0) + exit_info.cpu_seconds
        log.flush()
        return outcome

    def _end(self, run: _Run, uid: int | None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGKILL)
        if uid is not None:
            self.zygote.reap_uid(uid)

    def _progress(self, run: _Run) -> dict[str, float]:
        progress = {name: float(run.progress.get(name, run.restored.get(name, 0.0))) for name in COUNTERS}
        progress["cpu_seconds"] = run.restored.get("cpu_seconds", 0.0) + run.cpu_now()
        progress["duration_ms"] = run.restored.get("duration_ms", 0.0) + (time.monotonic() - run.started) * 1000
        return progress

    def _serve(self, run: _Run, sock: socket.socket, should_stop: Callable[[], StopReason | None],
               confinement: Mapping[str, Any], stop_grace: Callable[[], float | None] | None = None) -> Outcome:
        timeout = float((run.spec.manifest.get("runtime") or {}).get("timeout_seconds") or 0) or None
        deadline = run.started + timeout if timeout else None
        stopping: StopReason | None = None
        kill_at: float | None = None
        grace = self.options.stop_grace
        sock.settimeout(0.2)
        while True:
            now = time.monotonic()
            if stopping is None:
                stopping = should_stop() or (StopReason.TIMEOUT if deadline is not None and now > deadline else None)
                if stopping is not None:
                    asked = stop_grace() if stop_grace is not None else None
                    grace = self.options.stop_grace if asked is None else min(asked, self.options.stop_grace)
                    kill_at = now + grace
            if kill_at is not None and now > kill_at and stopping is not None:
                return self._killed(run, stopping, timeout, grace)
            try:
                message = protocol.receive(sock)
            except TimeoutError:
                continue
            except protocol.ProtocolError as exc:
                return self._crashed(run, exc, confinement)
            op = message.get("op")
            if op == "outcome":
                return self._outcome(run, message, confinement)
            if op == "step":
                run.progress = {k: float(v) for k, v in (message.get("progress") or {}).items()
                                if k in COUNTERS and isinstance(v, int | float)}
                reply: dict[str, Any] = {"ok": True, "stop": stopping.value if stopping else None}
            else:
                answer = self._answer(run, op, message)
                if answer is None:
                    continue
                reply = answer
            try:
                protocol.send(sock, reply)
            except OSError as exc:
                return self._crashed(run, exc, confinement)

    def _answer(self, run: _Run, op: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to one request of the child (None for a note)."""
        try:
            if op == "log":
                run.log.write(str(message.get("step", "run"))[:200], str(message.get("message", ""))[:20000],
                              level=str(message.get("level", "info")) if message.get("level") in
                              ("debug", "info", "warning", "error") else "info",
                              fields=message.get("fields") if isinstance(message.get("fields"), dict) else {})
                return None
            if op == "flush":
                run.log.flush()
                return None
            if op == "tool":
                name = str(message.get("name"))
                refusal = run.grants.refusal(name)
                if refusal:
                    run.log.write(RUN_STEP, f"Tool call refused by the runner: {refusal}", level="error",
                                  fields={"tool": name})
                    return {"ok": False, "code": protocol.Refusal.TOOL_REFUSED, "error": refusal}
                run.tool_calls += 1
                return {"ok": True}
            if op in ("put_checkpoint", "put_writes", "list_checkpoints"):
                return self._checkpoint(run, op, message)
            if op in ("decisions", "claim", "record"):
                return self._desk(run, op, message)
        except Exception as exc:  # noqa: BLE001 - the child sees the failure as its call's error
            return {"ok": False, "code": str(getattr(exc, "code", protocol.Refusal.FAILED)),
                    "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": False, "code": protocol.Refusal.UNKNOWN_REQUEST, "error": f"unknown request {str(op)[:40]!r}"}

    @staticmethod
    def _checkpoint(run: _Run, op: str, message: dict[str, Any]) -> dict[str, Any]:
        store = run.checkpoints
        if store is None:
            return {"ok": False, "code": protocol.Refusal.NO_CHECKPOINTS, "error": "this run has no checkpoint store"}
        if op == "list_checkpoints":
            found = store.list_checkpoints(checkpoint_ns=str(message.get("checkpoint_ns", "")),
                                           checkpoint_id=message.get("checkpoint_id"), before=message.get("before"),
                                           limit=int(message.get("limit") or 1))
            return {"ok": True, "checkpoints": found}
        body = message.get("body")
        if not isinstance(body, dict):
            return {"ok": False, "code": protocol.Refusal.BAD_REQUEST, "error": "body must be an object"}
        getattr(store, op)(str(message.get("checkpoint_id")), body)
        return {"ok": True}

    @staticmethod
    def _desk(run: _Run, op: str, message: dict[str, Any]) -> dict[str, Any]:
        desk = run.approvals
        if desk is None:
            return {"ok": False, "code": protocol.Refusal.NO_APPROVALS, "error": "this run has no approvals"}
        if op == "decisions":
            return {"ok": True, "decisions": desk.decisions()}
        if op == "claim":
            return {"ok": True, "claim": desk.claim(str(message.get("approval_id")), str(message.get("action_hash")))}
        outcome = message.get("outcome")
        desk.record(str(message.get("approval_id")), outcome if isinstance(outcome, dict) else {},
                    int(message.get("saving_micros") or 0))
        return {"ok": True}

    # -- how it ended ------------------------------------------------------------------------------
    def _metrics(self, run: _Run, reported: Mapping[str, Any] | None) -> dict[str, float]:
        metrics = self._progress(run)
        for name in ("records_processed", "steps", "tool_calls"):
            value = (reported or {}).get(name)
            if isinstance(value, int | float) and value >= 0:
                metrics[name] = float(value)
        return metrics

    def _outcome(self, run: _Run, message: dict[str, Any], confinement: Mapping[str, Any]) -> Outcome:
        status = str(message.get("status"))
        metrics = self._metrics(run, message.get("metrics") if isinstance(message.get("metrics"), dict) else None)
        error = message.get("error")
        if status not in ("succeeded", "failed", "cancelled", "abandoned", "awaiting_approval"):
            return Outcome("failed", metrics, error=f"the agent process reported an unknown status {status[:40]!r}")
        if error is not None:
            error = self._explained(str(error)[:4000], confinement)
        outputs = message.get("outputs") if isinstance(message.get("outputs"), dict) else None
        stop = message.get("stop_reason")
        if status == "awaiting_approval":
            outputs = {"actions": self._rebound(run, (outputs or {}).get("actions"))}
        return Outcome(status, metrics, outputs=outputs, error=error, retryable=bool(message.get("retryable")),
                       stop_reason=_stop_reason(stop))

    def _rebound(self, run: _Run, actions: Any) -> list[dict[str, Any]]:
        """The child's parked calls rebuilt here: hash, digest and impact are the runner's, not the agent's."""
        desk = run.approvals
        rebuilt = []
        for action in actions if isinstance(actions, list) else []:
            if not isinstance(action, dict) or not isinstance(action.get("arguments"), dict):
                continue
            rebuilt.append(bound_action(agent_id=getattr(desk, "agent_id", ""), version=getattr(desk, "version", ""),
                                        package_digest=run.digest, tool=str(action.get("tool")),
                                        arguments=action["arguments"], run_id=run.spec.run_id,
                                        interrupt_id=str(action.get("interrupt_id"))))
        return rebuilt

    @staticmethod
    def _explained(error: str, confinement: Mapping[str, Any]) -> str:
        limits = confinement["limits"]
        if error in ("memory",) or error.startswith("MemoryError"):
            return f"memory limit exceeded: the run may use {limits['memory_bytes'] // (1024 * 1024)} MiB " \
                   "(manifest resources.memory)"
        if "Resource temporarily unavailable" in error or error.startswith("BlockingIOError"):
            return f"process limit reached: a run may have {limits['processes']} processes ({error})"
        if "File too large" in error:
            return f"file size limit exceeded: a run may write files of {limits['file_bytes'] // (1024 * 1024)} " \
                   f"MiB ({error})"
        return error

    def _killed(self, run: _Run, reason: StopReason, timeout: float | None, grace: float) -> Outcome:
        metrics = self._progress(run)
        if reason == StopReason.CANCELLED:
            run.log.write(RUN_STEP, f"Run cancelled; the agent did not stop within {grace:g} s and was killed",
                          level="warning")
            return Outcome("cancelled", metrics, error="cancelled on request (the agent was killed)",
                           stop_reason=reason)
        if reason == StopReason.TIMEOUT:
            message = f"timed out after {timeout:g} s (manifest runtime.timeout_seconds); the agent was killed"
            run.log.write(RUN_STEP, f"Run {message}", level="error")
            return Outcome("failed", metrics, error=message, stop_reason=reason)
        return Outcome("abandoned", metrics, stop_reason=reason)

    def _crashed(self, run: _Run, exc: Exception, confinement: Mapping[str, Any]) -> Outcome:
        exit_info = self.zygote.wait_exit(run.pid, timeout=5.0)
        metrics = self._progress(run)
        if exit_info is not None:
            metrics["cpu_seconds"] = run.restored.get("cpu_seconds", 0.0) + exit_info.cpu_seconds
        error = self._exit_error(exit_info, confinement, exc)
        run.log.write(RUN_STEP, f"The agent process ended without an outcome: {error}", level="error")
        return Outcome("failed", metrics, error=error)

    @staticmethod
    def _exit_error(exit_info: _Exit | None, confinement: Mapping[str, Any], exc: Exception) -> str:
        if exit_info is None:
            return f"the agent process stopped answering ({exc})"
        status = exit_info.status
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            if signum == signal.SIGXCPU:
                return f"CPU time limit exceeded ({confinement['limits']['cpu_seconds']} s)"
            if signum == signal.SIGXFSZ:
                return f"file size limit exceeded ({confinement['limits']['file_bytes']} bytes)"
            if signum == signal.SIGKILL:
                return "the agent process was killed (memory limit or out of memory)"
            return f"the agent process died of signal {signal.Signals(signum).name}"
        code = os.WEXITSTATUS(status)
        if code == 71:
            return "the sandbox could not be set up"
        return f"the agent process exited with code {code} before reporting an outcome"
