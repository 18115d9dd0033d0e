"""What ``marketplace up`` does as a supervisor, beyond starting the platform (issue 19, item 5).

- **One supervisor per data directory**: ``DataDirLock`` holds an exclusive ``flock`` on
  ``<data dir>/marketplace-up.lock`` (with the supervisor's pid and URL in it) for as long as it
  runs; a second ``up`` on the same directory is refused with a message naming the first.
- **Children die with it**: ``Watchdog`` is a small process started first, in its own session (so a
  terminal's Ctrl-C reaches only the supervisor, which stops everything cleanly). It follows the
  supervisor's process tree (from ``/proc``) and, when the supervisor is gone without saying
  goodbye (``kill -9``, a crash), terminates every process it last saw in the tree (then kills
  those still alive after a grace period), stops the embedded PostgreSQL the supervisor started,
  and only then lets go of the data directory's lock (it holds the same open file).
- **No cluster made by accident**: ``require_cluster`` refuses commands such as ``token`` against
  a data directory that has no PostgreSQL cluster (only ``up`` creates one).
- **Bad arguments in one line**: ``functions/cli.py``'s ``main`` prints click's message as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

LOCK_NAME = "marketplace-up.lock"
#: Seconds the watchdog gives orphaned processes to stop after SIGTERM before SIGKILL.
GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.2


class SupervisorError(Exception):
    """A refusal with a message for the operator (printed as one line)."""


# -- the data directory ------------------------------------------------------------------------------
def has_cluster(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an embedded PostgreSQL cluster."""
    return (data_dir / "pg" / "PG_VERSION").is_file()


def require_cluster(data_dir: Path, command: str) -> None:
    """Refuse ``command`` on a data directory without a cluster, rather than creating one."""
    if not has_cluster(data_dir):
        raise SupervisorError(
            f"no platform in {data_dir} (no PostgreSQL cluster there): start it first with "
            f"`marketplace up --data-dir {data_dir}`, or pass the --data-dir of a running one; "
            f"{command} does not create one")


def read_lock_info(data_dir: Path) -> dict[str, Any] | None:
    """What the running supervisor wrote in the lock file (pid, url), or None when none holds it."""
    path = data_dir / LOCK_NAME
    try:
        with path.open("r", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = fh.read()
                try:
                    info = json.loads(text)
                except ValueError:
                    return {}
                return info if isinstance(info, dict) else {}
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None


class DataDirLock:
    """An exclusive lock on a data directory for one ``marketplace up``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self, **info: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read()
            fh.close()
            try:
                other = json.loads(text)
            except ValueError:
                other = {}
            who = f"pid {other.get('pid', '?')}" + (f", serving {other['url']}" if other.get("url") else "")
            raise SupervisorError(
                f"another `marketplace up` ({who}) is already running on {self.path.parent}; stop it first "
                "(or use another --data-dir)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), **info}))
        fh.flush()
        self._fh = fh

    def update(self, **info: Any) -> None:
        """Rewrite the lock's description (e.g. with the URL once the port is known)."""
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(json.dumps({"pid": os.getpid(), **info}))
            self._fh.flush()

    def fileno(self) -> int:
        if self._fh is None:
            raise RuntimeError("the lock is not held")
        return self._fh.fileno()

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# -- the watchdog ------------------------------------------------------------------------------------
class Watchdog:
    """The supervisor's side of the watchdog process (see the module's docstring)."""

    def __init__(self, data_dir: Path, lock: DataDirLock) -> None:
        read, self._write = os.pipe()
        command = [sys.executable, "-m", "functions.supervisor", "--watch", str(os.getpid()),
                   "--data-dir", str(data_dir), "--pipe-fd", str(read), "--lock-fd", str(lock.fileno())]
        self._proc = subprocess.Popen(command, pass_fds=(read, lock.fileno()), start_new_session=True,  # noqa: S603
                                      stdin=subprocess.DEVNULL)
        os.close(read)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop_postgres_on_crash(self) -> None:
        """Tell the watchdog the supervisor started the embedded PostgreSQL (so it must stop it)."""
        os.write(self._write, b"postgres\n")

    def close(self) -> None:
        """A clean shutdown: everything is stopped already; the watchdog exits without acting."""
        with contextlib.suppress(OSError):
            os.write(self._write, b"done\n")
            os.close(self._write)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks), from /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(root: int, table: dict[int, tuple[int, int]] | None = None) -> dict[int, int]:
    """Every process below ``root``: pid -> start time."""
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found[pid] = table[pid][1]
        stack.extend(children.get(pid, []))
    return found


def _alive(pid: int, started: int) -> bool:
    entry = _proc_table_entry(pid)
    return entry is not None and entry[1] == started


def _proc_table_entry(pid: int) -> tuple[int, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] == "Z":  # a zombie holds nothing
        return None
    return int(fields[1]), int(fields[19])


def _terminate(seen: dict[int, int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, started in seen.items():
            if _alive(pid, started):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in seen.items()):
            time.sleep(0.1)


def watch(supervisor: int, data_dir: Path, pipe_fd: int) -> int:
    """The watchdog's loop: follow the supervisor's tree until it says ``done`` or disappears."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    me = os.getpid()
    seen: dict[int, int] = {}
    stop_postgres = False
    buffer = b""
    while True:
        table = _proc_table()
        # The latest snapshot only: a process that left the tree (e.g. the PostgreSQL server pg_ctl
        # daemonizes) is not ours to kill; PostgreSQL is stopped with pg_ctl below.
        seen = {pid: started for pid, started in descendants(supervisor, table).items() if pid != me}
        ready, _, _ = select.select([pipe_fd], [], [], _POLL_SECONDS)
        if ready:
            chunk = os.read(pipe_fd, 4096)
            if chunk:
                buffer += chunk
                if b"postgres\n" in buffer:
                    stop_postgres = True
                if b"done\n" in buffer:
                    return 0
                continue
            break  # EOF without "done": the supervisor is gone
        if supervisor not in table:
            break
    _terminate({pid: started for pid, started in seen.items() if pid != me})
    if stop_postgres:
        from shared.kernel.adapters.embedded_pg import EmbeddedPostgres  # noqa: PLC0415

        with contextlib.suppress(Exception):
            EmbeddedPostgres(data_dir).stop(force=True)
    return 0


# -- what `marketplace up` and the other commands call ------------------------------------------------
def _error(message: str) -> None:
    print(f"marketplace: {message}", file=sys.stderr, flush=True)


class Supervision:
    """The lock and the watchdog of one running ``marketplace up``."""

    def __init__(self, data_dir: Path, lock: DataDirLock, watchdog: Watchdog) -> None:
        self.data_dir = data_dir
        self.lock = lock
        self.watchdog = watchdog

    def starting_postgres(self, pg: Any) -> None:
        """Say what starting the embedded PostgreSQL will do (the first start creates the cluster,
        which takes a while) and, when this ``up`` starts it, have the watchdog stop it on a crash."""
        if pg.running() is not None:
            print(f"using the PostgreSQL already running on {self.data_dir}", flush=True)
            return
        if not has_cluster(self.data_dir):
            print(f"first start: creating the PostgreSQL cluster in {self.data_dir / 'pg'} (a few seconds) ...",
                  flush=True)
        else:
            print("starting embedded PostgreSQL ...", flush=True)
        self.watchdog.stop_postgres_on_crash()

    def close(self) -> None:
        self.watchdog.close()
        self.lock.release()


def start(data_dir: Path, url: str, log_format: str = "auto") -> Supervision | None:
    """Take the data directory for this ``up`` and start its watchdog; None (after saying why, in one
    line on stderr) when another ``up`` holds it."""
    if log_format in ("human", "json"):
        os.environ["MARKETPLACE_LOG_FORMAT"] = log_format  # the server and worker processes follow
    lock = DataDirLock(data_dir)
    try:
        lock.acquire(url=url)
    except SupervisorError as exc:
        _error(str(exc))
        return None
    except OSError as exc:
        _error(f"cannot use the data directory {data_dir}: {exc}")
        return None
    return Supervision(data_dir, lock, Watchdog(data_dir, lock))


def cluster_present(settings: Any, command: str) -> bool:
    """False (after saying why) when ``command`` would create a cluster in an empty data directory."""
    if settings.mode != "local" or settings.database_url is not None:
        return True
    try:
        require_cluster(settings.data_dir, command)
    except SupervisorError as exc:
        _error(str(exc))
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketplace-watchdog")
    parser.add_argument("--watch", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--pipe-fd", type=int, required=True)
    parser.add_argument("--lock-fd", type=int, required=True)  # held open (inherited) until we exit
    args = parser.parse_args(argv)
    return watch(args.watch, args.data_dir, args.pipe_fd)


if __name__ == "__main__":
    sys.exit(main())
