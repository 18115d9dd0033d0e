"""``python -m runtime.zygote FD``: the pre-imported template agent children are forked from.

Starting a Python interpreter and importing LangGraph costs about a second; a run must not pay it.
The worker starts one zygote (``runtime.sandbox.Zygote``) with an environment that holds nothing
secret, the zygote imports the agent runtime once, and every run's child is a ``fork`` of it, which
is ready in milliseconds. The zygote holds no key and no platform settings, so neither does any
child, whatever it reads of its own memory or ``/proc/self``.

The control channel is a ``SOCK_SEQPACKET`` socket (one request or reply per packet):

* ``{"op": "spawn", "ref": R, "confinement": {...}}`` with the run's socket attached
  (``SCM_RIGHTS``) → ``{"op": "spawned", "ref": R, "pid": P}`` (or ``"error"``); the child applies
  its ``Confinement`` (runtime/confine.py) and serves the run (runtime/sandbox_child.py);
* ``{"op": "reap_uid", "uid": U}``: kill every process of that uid (a helper that becomes the uid
  and signals everything it may: the whole run, grandchildren that left its process group included);
* when a child ends: ``{"op": "exited", "pid": P, "status": S, "cpu_seconds": C, "maxrss_kib": M}``.

The zygote exits when the control channel closes (its worker went away).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

#: What every child needs: imported once here, shared copy-on-write by every child.
PRELOAD = ("langgraph.graph", "langgraph.types", "langchain_core.runnables", "runtime.executor",
           "runtime.sandbox_child", "runtime.confine", "yaml", "jsonschema")


def _preload() -> None:
    import importlib  # noqa: PLC0415
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional one: the child imports it when it needs it
            pass


def _child(request: dict[str, Any], fd: int, control: socket.socket, selector: selectors.BaseSelector) -> None:
    code = 70
    try:
        selector.close()
        control.close()
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        from runtime import confine, sandbox_child  # noqa: PLC0415
        conf = request["confinement"]
        confinement = confine.Confinement(workdir=conf["workdir"], limits=confine.Limits(**conf["limits"]),
                                          network=bool(conf["network"]), uid=conf.get("uid"),
                                          hide=tuple(conf.get("hide") or ()), keep=tuple(conf.get("keep") or ()))
        sock = socket.socket(fileno=fd)
        try:
            confine.apply(confinement)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, then the child ends
            sandbox_child.refuse(sock, f"the sandbox could not be set up: {exc}")
            code = 71
        else:
            code = sandbox_child.main(sock)
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        traceback.print_exc()
    finally:
        os._exit(code)


def _reap_uid(uid: int) -> None:
    if os.geteuid() != 0 or uid <= 0:
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the killer child
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # everything this uid may signal: its own processes
        except OSError:
            pass
        os._exit(0)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        report = {"op": "exited", "pid": pid, "status": status,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}
        try:
            control.send(json.dumps(report).encode())
        except OSError:
            return


def serve(control: socket.socket) -> None:
    """Serve spawn requests until the channel closes."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which closes the channel
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(wake_read, selectors.EVENT_READ, "wake")
    while True:
        for key, _ in selector.select():
            if key.data == "wake":
                try:
                    os.read(wake_read, 4096)
                except BlockingIOError:
                    pass
                _reap(control)
                continue
            message, fds, _flags, _addr = socket.recv_fds(control, 65536, 1)
            if not message:
                return
            request = json.loads(message)
            if request.get("op") == "reap_uid":
                _reap_uid(int(request["uid"]))
                continue
            if not fds:
                control.send(json.dumps({"op": "error", "ref": request.get("ref"),
                                         "error": "no socket attached"}).encode())
                continue
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                _child(request, fds[0], control, selector)
            os.close(fds[0])
            control.send(json.dumps({"op": "spawned", "ref": request.get("ref"), "pid": pid}).encode())


def main(argv: list[str]) -> int:
    """Entry point: the control socket's file descriptor is the argument."""
    control = socket.socket(fileno=int(argv[1]))
    _preload()
    control.send(json.dumps({"op": "ready", "pid": os.getpid()}).encode())
    try:
        serve(control)
    finally:
        for pid in list(_children()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    return 0


def _children() -> list[int]:
    """This zygote's live children (from /proc), to kill when it stops."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                found.append(int(entry))
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv))
