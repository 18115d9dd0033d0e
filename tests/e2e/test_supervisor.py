"""`marketplace up` as a supervisor (issue 19, item 5): one `up` per data directory, nothing left
after a kill -9 of it, `doctor` reporting each check, `token` refusing an empty data directory, one-line
argument errors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from support.cli import MARKETPLACE, read_until_ready
from support.wait import wait_until

from functions.supervisor import descendants, read_lock_info
from shared.kernel.adapters.embedded_pg import EmbeddedPostgres
from shared.kernel.net import free_port


def _doctor(data_dir: Path, port: int) -> tuple[int, dict]:
    done = subprocess.run([str(MARKETPLACE), "doctor", "--data-dir", str(data_dir), "--port", str(port), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, json.loads(done.stdout)


def _status(report: dict) -> dict[str, str]:
    return {c["check"]: c["status"] for c in report["checks"]}


def _serving(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.mark.embedded_postgres
def test_kill_9_of_up_leaves_nothing_a_second_up_is_refused_and_doctor_tells():
    base = Path(tempfile.mkdtemp(prefix="marketplace-sup-"))
    base.chmod(0o755)
    data_dir = base / "data"
    port = free_port()
    proc = subprocess.Popen([str(MARKETPLACE), "up", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = read_until_ready(proc)
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        assert any(line.startswith("first start: creating the PostgreSQL cluster") for line in lines), lines
        assert read_lock_info(data_dir)["pid"] == proc.pid

        # A second `up` on the same data directory is refused, in one line, and changes nothing.
        second = subprocess.run([str(MARKETPLACE), "up", "--port", str(free_port()), "--data-dir", str(data_dir)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 1
        assert "already running" in second.stderr and str(proc.pid) in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert _serving(port)

        code, report = _doctor(data_dir, port)
        assert code == 0 and set(_status(report).values()) == {"ok"}, report
        assert set(_status(report)) == {"data directory", "port", "postgresql", "api health", "leftover processes"}

        pg = EmbeddedPostgres(data_dir).running()
        assert pg is not None
        children = descendants(proc.pid)
        assert len(children) >= 3  # the watchdog, the HTTP server, the worker pool process
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        def leftovers() -> list[str]:
            """What still runs of the killed supervisor's: its children (pid, state, command line),
            the port, PostgreSQL."""
            found = []
            for pid in children:
                with contextlib.suppress(OSError, IndexError):
                    state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
                    if state != "Z":
                        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
                        found.append(f"pid {pid} ({state}): {command}")
            if _serving(port):
                found.append(f"port {port} still answers")
            if EmbeddedPostgres(data_dir).running() is not None:
                found.append("PostgreSQL still runs")
            return found
        try:
            wait_until(lambda: not leftovers(), timeout=60, what="every child of the killed supervisor and PostgreSQL "
                                                               "to stop")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still there: {leftovers()}") from None
        wait_until(lambda: read_lock_info(data_dir) is None, timeout=10, what="the data directory's lock")

        # The database is stopped: doctor says so, check by check, and exits 1.
        code, report = _doctor(data_dir, port)
        status = _status(report)
        assert code == 1
        assert status["postgresql"] == "failed" and "stopped" in next(
            c["detail"] for c in report["checks"] if c["check"] == "postgresql")
        assert status["api health"] == "failed"
        assert status["data directory"] == "ok" and status["port"] == "ok" and status["leftover processes"] == "ok"
    finally:
        if proc.poll() is None:
            proc.kill()
        EmbeddedPostgres(data_dir).stop(force=True)
        shutil.rmtree(base, ignore_errors=True)


def test_token_refuses_a_data_dir_without_a_cluster(tmp_path):
    data_dir = tmp_path / "empty"
    done = subprocess.run([str(MARKETPLACE), "token", "--email", "x@example.com", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "no platform in" in done.stderr and "marketplace up" in done.stderr
    assert not (data_dir / "pg").exists()


@pytest.mark.parametrize("argv", [["up", "--port", "99999"], ["up", "--port", "http"], ["up", "--nope"],
                                  ["doctor", "--port", "-1"], ["frobnicate"]])
def test_bad_arguments_get_one_line(argv):
    done = subprocess.run([str(MARKETPLACE), *argv], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("marketplace")
