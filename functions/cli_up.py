"""``marketplace up``: the local platform (embedded PostgreSQL, the API, workers, the scheduler).

The command-line layer (``functions/cli_operator.py``) parses the flags into :class:`UpOptions`
and calls :func:`up`; the lock, the watchdog and the log format are ``functions/supervisor.py``'s,
``marketplace doctor``'s checks ``functions/doctor_checks.py``'s.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions import supervisor
from functions.cli_common import say as _say
from functions.cli_common import settings_for
from shared.kernel.blas import pin_blas_threads
from shared.kernel.settings import Settings

if TYPE_CHECKING:
    from shared.composition import Container


@dataclass
class UpOptions:
    """The flags of ``marketplace up``."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str | None = None
    workers: int = 2
    http_workers: int | None = None
    threads: int | None = None
    log_format: str = "auto"


def up(args: UpOptions) -> int:  # noqa: PLR0915 - the start-up sequence, in order
    """Start embedded PostgreSQL, migrate, seed, serve the gateway; stop cleanly on a signal."""
    # On one developer machine, webhooks to a local receiver are the point; say otherwise with
    # MARKETPLACE_WEBHOOKS_ALLOW_LOOPBACK=false.
    os.environ.setdefault("MARKETPLACE_WEBHOOKS_ALLOW_LOOPBACK", "true")
    # One BLAS thread in this process and every process it starts (they inherit the environment),
    # set before anything imports numpy (shared/kernel/blas.py).
    pin_blas_threads(os.environ)
    from functions.serve import (  # noqa: PLC0415
        DEFAULT_THREADS,
        GatewayServer,
        ServerError,
        check_free,
        default_workers,
    )
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.adapters.embedded_pg import EmbeddedPostgres  # noqa: PLC0415
    from shared.kernel.jsonlog import configure_logging  # noqa: PLC0415
    from shared.kernel.net import free_port  # noqa: PLC0415

    port = args.port or free_port(args.host)
    args.port = port
    try:
        check_free(args.host, port)  # before anything starts
    except ServerError as exc:
        _say(f"marketplace: {exc}")
        return 1
    args.http_workers = args.http_workers or default_workers()
    args.threads = args.threads or DEFAULT_THREADS
    settings = settings_for(args.data_dir, args.host, args.port)
    # One `up` per data directory, a watchdog that stops everything if this process dies, human
    # log lines on a terminal (functions/supervisor.py).
    sup = supervisor.start(settings.data_dir, _loopback_url(args.host, port), args.log_format)
    if sup is None:
        return 1
    configure_logging(settings.log_level)
    _say(f"data directory: {settings.data_dir}")
    pg = EmbeddedPostgres(settings.data_dir)
    if settings.database_url is None:
        sup.starting_postgres(pg)
        info = pg.ensure_running()
        _say(f"PostgreSQL {info.version} on {info.host}:{info.port}")
    _say("applying migrations ...")
    container = build_container(settings)
    _say(f"catalog: {container.catalog.publish_builtin_agents()}")
    # The server processes read the same settings from the environment.
    server = GatewayServer(args.host, port, workers=args.http_workers, threads=args.threads,
                           env={"MARKETPLACE_DATA_DIR": str(settings.data_dir),
                                "MARKETPLACE_PUBLIC_URL": settings.public_url})
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            _say(f"received {signal.Signals(signum).name}, stopping ...")
            stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    background: list[Any] = []
    try:
        try:
            server.start()
        except ServerError as exc:
            _say(f"marketplace: {exc}")
            return 1
        background = _start_background(container, args.workers, _loopback_url(args.host, port))
        watched = pg if settings.database_url is None else None
        return _serve_until_stopped(args, settings, server, stop, watched)
    finally:
        # Workers drain their runs first: they still need the API to report them.
        _say("stopping the workers and the scheduler ...")
        for worker in background:
            worker.stop()
        _say("stopping the HTTP server ...")
        server.stop()
        container.close()
        if pg.running() is not None and settings.database_url is None:
            _say("stopping embedded PostgreSQL ...")
        if pg.stop():
            _say("stopped embedded PostgreSQL")
        sup.close()
        _say("stopped")


def _serve_until_stopped(args: UpOptions, settings: Settings, server: Any, stop: threading.Event,
                         pg: Any = None) -> int:
    url = f"http://{args.host}:{args.port}"
    _say(f"serving the API on {url} with {args.http_workers} server process(es) x {args.threads} threads "
         f"(OpenAPI: {url}/openapi.json)")
    data_flag = f" --data-dir {settings.data_dir}" if args.data_dir else ""
    _say(f"get a token: marketplace token --email you@example.com{data_flag}")
    _say(f"READY {url}")
    while not stop.wait(0.5):
        if not server.running():
            _say("marketplace: the HTTP server stopped unexpectedly")
            return 1
        if pg is not None and pg.running() is None and not stop.is_set():
            _restart_postgres(pg)
    return 0


def _restart_postgres(pg: Any) -> None:
    """The embedded PostgreSQL died under us: start it again, on its port (the API answers 503
    meanwhile and recovers by itself once connections succeed again)."""
    from shared.kernel.adapters.embedded_pg import EmbeddedPostgresError  # noqa: PLC0415

    _say("marketplace: PostgreSQL stopped unexpectedly; restarting it ...")
    try:
        info = pg.ensure_running()
    except EmbeddedPostgresError as exc:  # e.g. the dead server's backends still hold its memory
        _say(f"marketplace: PostgreSQL did not restart yet ({exc}); trying again")
        return
    _say(f"PostgreSQL {info.version} is back on {info.host}:{info.port}")


def _loopback_url(host: str, port: int) -> str:
    """How local workers reach the API (a wildcard bind is reached on the loopback address)."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - recognising a wildcard bind, not binding one
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _start_background(container: Container, workers: int, url: str) -> list[Any]:
    """The scheduler and the local data-plane worker pool (``workers`` processes talking to ``url``)."""
    from functions.scheduler import LocalScheduler, platform_jobs  # noqa: PLC0415
    from runtime.pool import WorkerPool  # noqa: PLC0415

    scheduler = LocalScheduler(platform_jobs(container))
    scheduler.start()
    # Issue 14: agent code runs in confined children that must not see the data directory (the
    # database files, the key-encryption keys, the data planes' keys): runtime/sandbox.py hides it.
    env = {**os.environ, "MARKETPLACE_SANDBOX_HIDE": os.pathsep.join(
        p for p in (str(container.settings.data_dir), os.environ.get("MARKETPLACE_SANDBOX_HIDE", "")) if p)}
    pool = WorkerPool(container.settings.dataplanes_dir, url, processes=max(workers, 0), env=env)
    pool.start()
    if workers:
        _say(f"{workers} local data-plane worker process(es) serving {container.settings.dataplanes_dir}")
    return [pool, scheduler]
