"""The embedded PostgreSQL is reached through its Unix socket, in the cluster's private folder.

A statement's round trip through a Unix socket skips the loopback TCP stack on both sides (see
docs/BENCHMARKS.md); the socket lives in the cluster's folder (mode 0700), which only the server's
user and root can enter (or, when that folder's path is too long for a socket address, in a private
folder of its own in /tmp). TCP on 127.0.0.1 still listens, and refuses every connection: an agent
run allowed the network shares the machine's loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
from support.wait import wait_until

from shared.composition import Container
from shared.kernel.adapters import embedded_pg
from shared.kernel.adapters.embedded_pg import EmbeddedPostgres, ServerInfo
from shared.kernel.settings import Settings

pytestmark = pytest.mark.embedded_postgres


def test_the_session_server_has_a_socket_in_its_private_folder(settings: Settings, container: Container) -> None:
    info = EmbeddedPostgres(settings.data_dir).running()
    assert info is not None
    pgdata = (settings.data_dir / "pg").resolve()
    assert info.socket_dir == str(pgdata)
    assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(Path(info.socket_dir, f".s.PGSQL.{info.port}").stat().st_mode)


def test_url_goes_through_the_socket_and_tcp_is_refused(settings: Settings, container: Container) -> None:
    """An agent run allowed the network shares the machine's loopback: the database's TCP port
    must not let it in (trust on TCP would make it the superuser of every org's data)."""
    info = EmbeddedPostgres(settings.data_dir).running()
    assert info is not None
    with psycopg.connect(info.url(settings.db_name)) as conn:
        # inet_server_addr() is NULL on a Unix-socket connection
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)
        assert conn.info.host == info.socket_dir
    for user in ("postgres", "marketplace", "nobody"):
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
            psycopg.connect(f"postgresql://{user}@127.0.0.1:{info.port}/{settings.db_name}", connect_timeout=10)
    hba = (settings.data_dir / "pg" / "pg_hba.conf").read_text()
    assert [line for line in hba.splitlines() if line and not line.startswith("#")] == [
        "local all all trust", "host all all all reject"]


def test_which_folders_can_hold_the_socket(tmp_path: Path) -> None:
    assert embedded_pg._socket_dir(tmp_path / ("d" * 120) / "pg") is None  # too long for a socket address
    assert embedded_pg._socket_dir(Path("/srv/a,b/pg")) is None  # PostgreSQL splits -k on commas
    assert embedded_pg._socket_dir(Path("/srv/data/pg")) == "/srv/data/pg"


def test_a_data_dir_too_long_for_a_socket_gets_a_private_socket_folder_and_tcp_stays_refused() -> None:
    """The cluster's folder cannot hold the socket: it goes to a private folder of its own in /tmp,
    still 0700 and the server's user's, and TCP is still refused; the folder goes with the server."""
    root = Path(tempfile.mkdtemp(prefix="marketplace-longpath-"))
    root.chmod(0o755)
    data = root / ("d" * 100)
    pg = EmbeddedPostgres(data)
    try:
        info = pg.ensure_running()
        assert info.socket_dir is not None and info.socket_dir != str(pg.pgdata)
        folder = Path(info.socket_dir)
        assert folder.parent == Path("/tmp") and folder.name.startswith("marketplace-pg-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert folder.stat().st_uid == pg.pgdata.stat().st_uid  # the server's user's, as the cluster
        with psycopg.connect(info.url("postgres")) as conn:
            assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{info.port}/postgres", connect_timeout=10)
        # Another process finds the server, and its socket, from the data directory alone.
        assert EmbeddedPostgres(data).running() == info
        # Killed, the server leaves its folder; the next start removes it and makes a new one.
        os.kill(info.pid, signal.SIGKILL)
        wait_until(lambda: pg.running() is None, timeout=30, what="the killed server to be gone")
        again = wait_until(lambda: _started(pg), timeout=60, interval=0.5, what="the server to start again")
        assert again.socket_dir is not None and again.socket_dir != info.socket_dir
        assert not folder.exists() and Path(again.socket_dir).is_dir()
        assert pg.stop()
        assert not Path(again.socket_dir).exists()
    finally:
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


def _started(pg: EmbeddedPostgres) -> ServerInfo | None:
    """Start the server; None while the killed one's processes still hold its shared memory."""
    try:
        return pg.ensure_running()
    except embedded_pg.EmbeddedPostgresError:
        return None


def test_a_socket_folder_is_quoted_in_the_url() -> None:
    info = ServerInfo(host="127.0.0.1", port=5999, pid=1, version="18", socket_dir="/srv/my data/pg")
    assert info.url("db") == "postgresql://postgres@/db?host=/srv/my%20data/pg&port=5999"
    assert ServerInfo(host="127.0.0.1", port=5999, pid=1, version="18").url("db") == \
        "postgresql://postgres@127.0.0.1:5999/db"
