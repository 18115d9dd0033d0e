"""The README's local command: ``marketplace up`` serves the API; ``token`` mints tokens; SIGTERM stops all.

The tests in which ``up`` starts its own embedded PostgreSQL are marked ``embedded_postgres``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
from support.cli import MARKETPLACE, read_until_ready

from shared.kernel.net import free_port


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def fresh_dir():
    path = Path(tempfile.mkdtemp(prefix="marketplace-cli-"))
    path.chmod(0o755)
    yield path / "data"
    subprocess.run([str(MARKETPLACE), "doctor", "--data-dir", str(path / "data")], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.embedded_postgres
def test_up_token_doctor_and_clean_stop(fresh_dir):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(MARKETPLACE), "up", "--port", str(port), "--data-dir", str(fresh_dir),
                             "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        read_until_ready(proc)
        url = f"http://127.0.0.1:{port}"
        status, health = _get(f"{url}/health")
        assert status == 200 and health["status"] == "ok"
        assert health["database_version"].startswith("18") and health["schema_version"] >= 1
        token = subprocess.run([str(MARKETPLACE), "token", "--email", "cli@example.com", "--platform-admin",
                                "--data-dir", str(fresh_dir)], capture_output=True, text=True, check=True
                               ).stdout.strip().splitlines()[-1]
        status, me = _get(f"{url}/me", token)
        assert status == 200 and me["user"]["email"] == "cli@example.com" and me["user"]["platform_admin"]
        doctor = json.loads(subprocess.run([str(MARKETPLACE), "doctor", "--data-dir", str(fresh_dir)],
                                           capture_output=True, text=True, check=True).stdout)
        assert doctor["postgres"]["running"] is True and doctor["schema_version"] == doctor["schema_latest"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped embedded PostgreSQL" in out
    pidfile = fresh_dir / "pg" / "postmaster.pid"
    assert not pidfile.exists()


@pytest.mark.embedded_postgres
def test_up_refuses_an_unreachable_data_dir_as_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as a separate service user")
    private = Path(tempfile.mkdtemp(prefix="marketplace-private-"))  # mode 0700
    try:
        result = subprocess.run([str(MARKETPLACE), "up", "--port", str(free_port()), "--data-dir", str(private / "d")],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode != 0
        assert "cannot enter" in (result.stdout + result.stderr)
        assert oct(private.stat().st_mode & 0o777) == "0o700"  # left as it was
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_up_reports_a_port_in_use_and_leaves_nothing_running(fresh_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(MARKETPLACE), "up", "--port", str(port), "--data-dir", str(fresh_dir),
                                 "--workers", "0", "--http-workers", "1"], capture_output=True, text=True,
                                timeout=120, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stdout
    assert not (fresh_dir / "pg").exists()  # refused before anything started


@pytest.mark.parametrize("flag", ["--http-workers", "--threads"])
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_up_refuses_bad_server_sizes_before_starting_anything(fresh_dir, flag, value):
    result = subprocess.run([str(MARKETPLACE), "up", "--data-dir", str(fresh_dir), flag, value], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert flag in result.stderr and ("at least 1" in result.stderr or "not a whole number" in result.stderr)
    assert not (fresh_dir / "pg").exists()
