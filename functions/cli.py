"""``marketplace``: run the platform locally and operate it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from functions.cli_common import say as _say
from functions.cli_common import settings_for
from functions.cli_up import UpOptions, doctor, up
from shared.kernel.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return settings_for(getattr(args, "data_dir", None), getattr(args, "host", None), getattr(args, "port", None))


def cmd_up(args: argparse.Namespace) -> int:
    """Start embedded PostgreSQL, migrate, seed, serve the gateway; stop cleanly on a signal."""
    return up(UpOptions(host=args.host, port=args.port, data_dir=args.data_dir, workers=args.workers,
                        http_workers=args.http_workers, threads=args.threads))


def cmd_doctor(args: argparse.Namespace) -> int:
    """Report what is running where, without starting anything."""
    return doctor(args.data_dir)


def cmd_token(args: argparse.Namespace) -> int:
    """Print an access token for a user (local mode), creating the user."""
    from shared.composition import build_container  # noqa: PLC0415

    settings = _settings(args)
    if settings.mode != "local":
        _say("marketplace token works in local mode only")
        return 2
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
    up.add_argument("--port", type=int, default=8080)
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

    args = build_parser().parse_args(argv)
    if getattr(args, "data_dir", None):
        os.environ["MARKETPLACE_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    try:
        return int(args.func(args))
    except (EmbeddedPostgresError, ValidationError, OSError) as exc:
        print(f"marketplace: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
