"""How ``marketplace up`` serves the gateway: granian, a production HTTP server.

granian parses HTTP in Rust and runs the WSGI app (the same Flask gateway the tests drive) on a
pool of threads in each of ``workers`` processes, so a request's Python work spreads over the
machine's cores instead of queueing behind one interpreter lock. The supervisor
(``marketplace up``) keeps PostgreSQL, migrations, the scheduler and the local data-plane
workers; each server process builds its own container from the same settings (passed as
``MARKETPLACE_*`` environment variables) without migrating.

Threads per process bound how many requests run at once: long polls (``GET /tasks/next``) and
live log streams hold one for their duration, so the default is generous; requests beyond it
wait in granian's queue rather than being refused.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from shared.kernel.blas import pin_blas_threads
from shared.kernel.net import bind_refused

DEFAULT_THREADS = 64


def default_workers() -> int:
    """Server processes when none are asked for: one per core, at most four."""
    return max(1, min(os.cpu_count() or 1, 4))


def app() -> Any:
    """The WSGI app of one server process (granian's factory target)."""
    from functions.gateway import create_gateway  # noqa: PLC0415
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.jsonlog import configure_logging  # noqa: PLC0415
    from shared.kernel.settings import Settings  # noqa: PLC0415

    settings = Settings()
    configure_logging(settings.log_level)
    return create_gateway(build_container(settings, migrate=False))


class ServerError(RuntimeError):
    """The HTTP server did not start or stopped unexpectedly."""


def check_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, with a message that says so."""
    refused = bind_refused(host, port)
    if refused is not None:
        raise ServerError(f"cannot listen on {host}:{port}: {refused.strerror} (is port {port} in use?)")


def _probe_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104


def _healthy(host: str, port: int) -> bool:
    """Whether our gateway (not merely something) answers on ``host:port``."""
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read()
        return response.status == 200 and b'"platform_version"' in body
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class GatewayServer:
    """granian serving ``functions.serve:app``, as a child process of the supervisor."""

    def __init__(self, host: str, port: int, *, workers: int, threads: int, env: Mapping[str, str]) -> None:
        if workers < 1 or threads < 1:
            raise ValueError("workers and threads must be at least 1")
        self.host, self.port = host, port
        self._command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--factory",
                         "--host", host, "--port", str(port), "--workers", str(workers),
                         "--blocking-threads", str(threads), "--no-ws", "--log-level", "error",
                         "--workers-kill-timeout", "10", "functions.serve:app"]
        self._env = dict(pin_blas_threads({**os.environ, **env}))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 120) -> None:
        """Start the server and wait until it answers ``GET /health``."""
        check_free(self.host, self.port)
        # Its own process group: a Ctrl-C in the terminal reaches the supervisor, which stops
        # the server after the local workers have drained.
        self._proc = subprocess.Popen(self._command, env=self._env, start_new_session=True)  # noqa: S603 - our own argv
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"the HTTP server exited with status {self._proc.returncode}")
            if _healthy(_probe_host(self.host), self.port):
                return
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"the HTTP server did not answer within {timeout:.0f}s")

    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, timeout: float = 30) -> None:
        """Stop gracefully (SIGTERM: in-flight requests finish), then kill what is left."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
