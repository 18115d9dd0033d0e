"""Confinement of one agent run's child process, applied in the child between fork and agent code.

What ``apply`` does, in order (docs/RUNS.md "Isolation of agent code"):

1. a session of its own (``setsid``), so the parent kills the child and whatever it started as one
   process group;
2. when the runner is root: a mount namespace of its own, where ``/tmp``, ``/var/tmp`` and
   ``/dev/shm`` are read-only, the working directory is the one writable place, and each ``hide``
   path (the runner's home and data directory) is covered by an empty read-only tmpfs, with the
   ``keep`` paths under them (the interpreter's own files) bound back read-only; a network
   namespace of its own (only a down loopback) unless the run may use the network;
3. when it is not root: a user namespace with a network namespace when the run may not use the
   network, where the kernel allows unprivileged ones (``supported`` says which at start);
4. resource limits: address space (the manifest's ``resources.memory``), CPU seconds, processes,
   file size, open files, no core files;
5. its private working directory; then, when root, the run's own unprivileged uid and gid with no
   supplementary groups; ``no_new_privs`` so no set-uid program gives privileges back;
6. an empty environment (``HOME`` and ``TMPDIR`` point at the working directory).

The system calls that Python 3.11's ``os`` does not expose (``unshare``, ``mount``, ``prctl``) are
called through ``ctypes`` on the C library: they are the kernel's public interface, and the
alternative, the ``unshare`` program, would need a second ``exec`` that costs the run its pre-imported
interpreter (see runtime/zygote.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from dataclasses import dataclass, field

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - they are replaced, not used

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class ConfinementError(Exception):
    """A confinement step that must succeed failed."""


@dataclass(frozen=True)
class Limits:
    """The resource limits of one run (bytes, seconds, counts)."""

    memory_bytes: int
    cpu_seconds: int
    processes: int = 64
    file_bytes: int = 64 * 1024 * 1024
    open_files: int = 256


@dataclass(frozen=True)
class Confinement:
    """How to confine one child (built by the parent, applied by the child)."""

    workdir: str
    limits: Limits
    network: bool = False
    uid: int | None = None  # the run's own uid when the runner is root
    hide: tuple[str, ...] = field(default_factory=tuple)  # covered by an empty read-only folder
    keep: tuple[str, ...] = field(default_factory=tuple)  # stays readable even under a hidden folder


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    """``unshare(2)``."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(value: str | None) -> bytes | None:
        return None if value is None else value.encode()
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def prctl(option: int, value: int) -> None:
    """``prctl(2)`` with one argument."""
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), "prctl")


def make_undumpable() -> None:
    """Keep processes of the same uid out of this one's ``/proc/<pid>/{environ,mem,...}`` (the worker
    calls it at start: when agent code runs under the runner's own uid, it still cannot read the
    data-plane key from the worker's environment)."""
    prctl(PR_SET_DUMPABLE, 0)


def supported() -> dict[str, bool]:
    """What this runner can confine, probed once in a throwaway child (the runner says it at start)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the probe child
        os.close(read)
        flags = 0
        if os.geteuid() == 0:
            for bit, flag in ((1, CLONE_NEWNS), (2, CLONE_NEWNET)):
                try:
                    unshare(flag)
                    flags |= bit
                except ConfinementError:
                    pass
        else:
            try:
                unshare(CLONE_NEWUSER | CLONE_NEWNET)
                flags |= 2
            except ConfinementError:
                pass
        os.write(write, bytes([flags]))
        os._exit(0)
    os.close(write)
    try:
        data = os.read(read, 1)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    bits = data[0] if data else 0
    return {"root": os.geteuid() == 0, "mount_namespace": bool(bits & 1), "network_namespace": bool(bits & 2)}


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _bind(source: str, target: str, *, writable: bool) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY))


def _private_mounts(confinement: Confinement) -> None:
    """The child's view of the file system (root only; in its own mount namespace)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    hidden = [os.path.realpath(p) for p in confinement.hide if os.path.isdir(p) and os.path.realpath(p) != "/"]
    keep = sorted({os.path.realpath(p) for p in confinement.keep if os.path.isdir(p)})
    # What must stay readable under a hidden folder (the interpreter's own files under the runner's
    # home, say) is opened before the folder is covered and bound back at the same path.
    exposed = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY))
               for path in keep if any(_under(path, h) for h in hidden)]
    for path in hidden:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    for path, fd in exposed:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _bind(f"/proc/self/fd/{fd}", path, writable=False)
        os.close(fd)
    for path in hidden:
        _mount(None, path, None, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_RDONLY, "mode=0755")
    for path in PRIVATE_TMP:  # world-writable on the host: read-only here
        if os.path.isdir(path):
            _bind(path, path, writable=False)
    _bind(confinement.workdir, confinement.workdir, writable=True)


def _limits(limits: Limits) -> None:
    pairs = (
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 5),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_CORE, 0, 0),
    )
    for which, soft, hard in pairs:
        resource.setrlimit(which, (soft, hard))


def apply(confinement: Confinement) -> None:
    """Confine the calling (freshly forked, single-threaded) process; see the module docstring."""
    os.setsid()
    root = os.geteuid() == 0
    if root:
        flags = CLONE_NEWNS | (0 if confinement.network else CLONE_NEWNET)
        try:
            unshare(flags)
        except ConfinementError:
            unshare(CLONE_NEWNS)  # no network namespaces here: the runner said so at start
        else:
            pass
        _private_mounts(confinement)
    elif not confinement.network:
        try:
            unshare(CLONE_NEWUSER | CLONE_NEWNET)
        except ConfinementError:
            pass  # the runner said at start that it cannot take the network away
    _limits(confinement.limits)
    os.chdir(confinement.workdir)
    if root and confinement.uid is not None:
        os.setgroups([])
        os.setgid(confinement.uid)
        os.setuid(confinement.uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.environ.clear()
    os.environ.update({"HOME": confinement.workdir, "TMPDIR": confinement.workdir, "LANG": "C.UTF-8"})
