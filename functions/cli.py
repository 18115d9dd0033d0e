"""``marketplace``: run the platform locally and operate it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from functions import supervisor
from shared.kernel.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "host", None) and getattr(args, "port", None):
        overrides["public_url"] = f"http://{args.host}:{args.port}"
    return Settings(**overrides)


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_up(args: argparse.Namespace) -> int:  # noqa: PLR0915 - the start-up sequence, in order
    """Start embedded PostgreSQL, migrate, seed, serve the gateway; stop cleanly on a signal."""
    # On one developer machine, webhooks to a local receiver are the point; say otherwise with
    # MARKETPLACE_WEBHOOKS_ALLOW_LOOPBACK=false.
    os.environ.setdefault("MARKETPLACE_WEBHOOKS_ALLOW_LOOPBACK", "true")
    from functions.serve import (  # noqa: PLC0415
        DEFAULT_THREADS,
        GatewayServer,
        ServerError,
        check_free,
        default_workers,
        free_port,
    )
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.adapters.embedded_pg import EmbeddedPostgres  # noqa: PLC0415
    from shared.kernel.jsonlog import configure_logging  # noqa: PLC0415

    port = args.port or free_port(args.host)
    args.port = port
    try:
        check_free(args.host, port)  # before anything starts
    except ServerError as exc:
        _say(f"marketplace: {exc}")
        return 1
    args.http_workers = args.http_workers or default_workers()
    args.threads = args.threads or DEFAULT_THREADS
    settings = _settings(args)
    # issue 19: one `up` per data directory, a watchdog that stops everything if this process dies,
    # human log lines on a terminal (functions/supervisor.py)
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


def _serve_until_stopped(args: argparse.Namespace, settings: Settings, server: Any, stop: threading.Event,
                         pg: Any = None) -> int:
    url = f"http://{args.host}:{args.port}"
    _say(f"serving the API on {url} with {args.http_workers} server process(es) x {args.threads} threads "
         f"(OpenAPI: {url}/openapi.json)")
    data_flag = f" --data-dir {settings.data_dir}" if getattr(args, "data_dir", None) else ""
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


def _start_background(container: Any, workers: int, url: str) -> list[Any]:
    """The scheduler and the local data-plane worker pool (``workers`` processes talking to ``url``)."""
    from functions.scheduler import LocalScheduler, platform_jobs  # noqa: PLC0415
    from runtime.pool import WorkerPool  # noqa: PLC0415

    scheduler = LocalScheduler(platform_jobs(container))
    scheduler.start()
    pool = WorkerPool(container.settings.dataplanes_dir, url, processes=max(workers, 0))
    pool.start()
    if workers:
        _say(f"{workers} local data-plane worker process(es) serving {container.settings.dataplanes_dir}")
    return [pool, scheduler]


def cmd_token(args: argparse.Namespace) -> int:
    """Print an access token for a user (local mode), creating the user."""
    from shared.composition import build_container  # noqa: PLC0415

    settings = _settings(args)
    if settings.mode != "local":
        _say("marketplace token works in local mode only")
        return 2
    if not supervisor.cluster_present(settings, "marketplace token"):  # issue 19: never create one here
        return 1
    container = build_container(settings)
    try:
        pair = container.identity.dev_grant(args.email, platform_admin=True if args.platform_admin else None)
    finally:
        container.close()
    if args.json:
        _say(json.dumps({"access_token": pair.access_token, "refresh_token": pair.refresh_token,
                         "expires_in": pair.expires_in}))
    else:
        _say(pair.access_token)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations."""
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.db.migrate import schema_version  # noqa: PLC0415

    container = build_container(_settings(args))
    try:
        _say(f"schema version {schema_version(container.db)}")
    finally:
        container.close()
    return 0


def cmd_rotate_kek(args: argparse.Namespace) -> int:
    """Rotate the key-encryption key (a new key file locally, a new primary version in Cloud KMS)
    and re-wrap every org's data key with it; running servers keep working throughout."""
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.errors import AppError  # noqa: PLC0415
    from shared.secrets import KekError  # noqa: PLC0415

    container = build_container(_settings(args))
    try:
        done = container.secrets.rotate_kek()
        _say(f"key-encryption key {done.kek_version}: {done.rewrapped} data keys re-wrapped")
    except (KekError, AppError) as exc:
        _say(f"marketplace: the key-encryption key was not rotated: {exc}")
        return 1
    finally:
        container.close()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the local platform and report each check as ok or failed (functions/doctor_checks.py)."""
    from functions.doctor_checks import run_doctor  # noqa: PLC0415

    return run_doctor(_settings(args), host=args.host, port=args.port, as_json=True if args.json else None)


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI document, or the API Gateway config."""
    import yaml  # noqa: PLC0415

    from functions.main import load_operations  # noqa: PLC0415
    from functions.openapi import gateway_document, openapi_document  # noqa: PLC0415

    load_operations()
    if args.gateway:
        _say(yaml.safe_dump(gateway_document(project=args.project, region=args.region,
                                             reads_per_minute=args.reads_per_minute,
                                             writes_per_minute=args.writes_per_minute), sort_keys=False))
    else:
        _say(json.dumps(openapi_document(), indent=2, sort_keys=True))
    return 0


def cmd_manifest_validate(args: argparse.Namespace) -> int:
    """Validate a manifest file (or "-" for stdin) and print the verdict of POST /manifests/validate."""
    from shared.catalog import check_manifest, verdict_body  # noqa: PLC0415

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"marketplace: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    verdict = check_manifest(manifest_yaml=text)
    _say(json.dumps(verdict_body(verdict), indent=2, ensure_ascii=False))
    for problem in verdict.problems:
        print(f"{args.file}: {problem['path'] or '(document)'}: {problem['message']}", file=sys.stderr)
    return 0 if verdict.ok else 1


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    parser = argparse.ArgumentParser(prog="marketplace", description="Agent marketplace platform")
    sub = parser.add_subparsers(dest="command", required=True)
    data_help = "data directory (default: MARKETPLACE_DATA_DIR or a per-user folder)"

    up = sub.add_parser("up", help="run the platform locally")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=supervisor.port, default=8080)
    up.add_argument("--log-format", choices=["auto", "human", "json"], default="auto",
                    help="log lines: human on a terminal and JSON otherwise (auto), or always one of them")
    up.add_argument("--data-dir", help=data_help)
    up.add_argument("--workers", type=int, default=2, help="local data-plane workers")
    up.add_argument("--http-workers", type=_positive, default=None,
                    help="HTTP server processes (default: one per core, at most 4)")
    up.add_argument("--threads", type=_positive, default=None,
                    help="request threads per HTTP server process (default: 64)")
    up.set_defaults(func=cmd_up)

    token = sub.add_parser("token", help="print an access token (local mode)")
    token.add_argument("--email", required=True)
    token.add_argument("--platform-admin", action="store_true")
    token.add_argument("--data-dir", help=data_help)
    token.add_argument("--json", action="store_true", help="print access and refresh tokens as JSON")
    token.set_defaults(func=cmd_token)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--data-dir", help=data_help)
    migrate.set_defaults(func=cmd_migrate)

    rotate_kek = sub.add_parser("rotate-kek", help="rotate the key-encryption key and re-wrap the data keys")
    rotate_kek.add_argument("--data-dir", help=data_help)
    rotate_kek.set_defaults(func=cmd_rotate_kek)

    doctor = sub.add_parser("doctor", help="show what is running, versions, data dir")
    doctor.add_argument("--data-dir", help=data_help)
    doctor.add_argument("--host", default="127.0.0.1")
    doctor.add_argument("--port", type=supervisor.port, default=8080, help="the port marketplace up uses")
    doctor.add_argument("--json", action="store_true", help="JSON even on a terminal")
    doctor.set_defaults(func=cmd_doctor)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document")
    openapi.add_argument("--gateway", action="store_true", help="API Gateway (OpenAPI 2.0) config instead")
    openapi.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", "PROJECT_ID"))
    openapi.add_argument("--region", default=os.environ.get("GOOGLE_CLOUD_REGION", "us-central1"))
    openapi.add_argument("--reads-per-minute", type=int, default=60_000,
                         help="API Gateway quota: GET calls per minute, per consumer project (default 60000)")
    openapi.add_argument("--writes-per-minute", type=int, default=20_000,
                         help="API Gateway quota: other calls per minute, per consumer project (default 20000)")
    openapi.set_defaults(func=cmd_openapi)

    manifest = sub.add_parser("manifest", help="work with agent manifests")
    manifest_sub = manifest.add_subparsers(dest="manifest_command", required=True)
    validate = manifest_sub.add_parser("validate", help="validate a manifest file; exit 1 when it is invalid")
    validate.add_argument("file", help='the manifest (YAML or JSON), or "-" for stdin')
    validate.set_defaults(func=cmd_manifest_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``marketplace`` command."""
    from pydantic import ValidationError  # noqa: PLC0415

    from shared.kernel.adapters.embedded_pg import EmbeddedPostgresError  # noqa: PLC0415

    args = supervisor.one_line_errors(build_parser()).parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["MARKETPLACE_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    try:
        return int(args.func(args))
    except (EmbeddedPostgresError, ValidationError, OSError) as exc:
        print(f"marketplace: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
