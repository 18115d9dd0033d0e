"""``python -m runtime.runner``: the data-plane container's entrypoint (BYOC clusters, Cloud Run).

Reads its settings from the environment once (``MARKETPLACE_CONTROL_PLANE_URL``,
``MARKETPLACE_DATAPLANE_KEY``, ...), serves ``GET /health`` on ``MARKETPLACE_DATAPLANE_PORT``
(default 8000) for the container's probes, and runs one ``Worker`` for the deployment the key
belongs to until SIGTERM/SIGINT, which drains the current run (``MARKETPLACE_DRAIN_SECONDS``).
``/health`` answers 503 until the data plane has registered with the control plane.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from runtime.client import DataPlaneClient
from runtime.worker import RUNTIME_VERSION, Worker, WorkerOptions, default_worker_id

_log = logging.getLogger("marketplace.runner")


class RunnerSettings(BaseModel):
    """The runner's settings; ``from_env`` reads them from an environment mapping."""

    control_plane_url: str = Field(min_length=1)
    dataplane_key: SecretStr
    host: str = "0.0.0.0"  # noqa: S104 - the probes reach the container from outside
    port: int = Field(default=8000, ge=0, le=65535)  # 0: any free port
    worker_id: str = Field(default_factory=default_worker_id)
    lease_seconds: int = Field(default=30, ge=2, le=900)
    poll_wait: float = Field(default=20.0, ge=0, le=30)
    drain_seconds: float = Field(default=30.0, ge=0)
    task_wait: float = Field(default=30.0, ge=0, le=30)
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RunnerSettings:
        """Settings from ``MARKETPLACE_*`` variables (``PORT``, as Cloud Run sets it, for the port)."""
        names = {"control_plane_url": "MARKETPLACE_CONTROL_PLANE_URL", "dataplane_key": "MARKETPLACE_DATAPLANE_KEY",
                 "host": "MARKETPLACE_DATAPLANE_HOST", "worker_id": "MARKETPLACE_INSTANCE_ID",
                 "lease_seconds": "MARKETPLACE_LEASE_SECONDS", "poll_wait": "MARKETPLACE_POLL_WAIT",
                 "drain_seconds": "MARKETPLACE_DRAIN_SECONDS", "task_wait": "MARKETPLACE_TASK_WAIT",
                 "log_level": "MARKETPLACE_LOG_LEVEL"}
        values: dict[str, Any] = {field: environ[var] for field, var in names.items() if environ.get(var)}
        port = environ.get("MARKETPLACE_DATAPLANE_PORT") or environ.get("PORT")
        if port:
            values["port"] = port
        return cls.model_validate(values)

    def worker_options(self) -> WorkerOptions:
        """The worker's polling and lease options."""
        return WorkerOptions(worker_id=self.worker_id, lease_seconds=self.lease_seconds, poll_wait=self.poll_wait,
                             drain_seconds=self.drain_seconds)


class HealthServer:
    """``GET /health`` for the container's probes, in a background thread."""

    def __init__(self, worker: Worker, host: str, port: int) -> None:
        self.worker = worker
        handler = self._handler()
        self.server = ThreadingHTTPServer((host, port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound (for port 0)."""
        return int(self.server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        worker = self.worker

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/health":
                    self._send(404, {"error": "not found"})
                    return
                registered = worker.registration is not None
                self._send(200 if registered else 503, {
                    "status": "ok" if registered else "starting", "version": RUNTIME_VERSION,
                    "deployment_id": worker.registration.deployment_id if worker.registration else None,
                    "current_run": worker.current_run, "runs_done": worker.runs_done})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Probes are not worth a log line each."""

        return Handler

    def start(self) -> None:
        """Serve in the background."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def configure_logging(level: str) -> None:
    """JSON log lines with secret redaction, as the control plane writes them."""
    from shared.kernel.jsonlog import configure_logging as configure  # noqa: PLC0415 - logging only, no services

    configure(level)


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the data plane until SIGTERM/SIGINT."""
    del argv  # configured through the environment only, like every container of the platform
    settings = RunnerSettings.from_env(os.environ if environ is None else environ)
    configure_logging(settings.log_level)
    client = DataPlaneClient(settings.control_plane_url, settings.dataplane_key.get_secret_value())
    worker = Worker(client, options=settings.worker_options())
    health = HealthServer(worker, settings.host, settings.port)
    health.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        _log.info("received %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _log.info("data plane %s serving /health on port %d", settings.worker_id, health.port)
    try:
        worker.serve(stop)
    finally:
        health.stop()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
