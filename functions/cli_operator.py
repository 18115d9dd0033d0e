"""The operator's commands: ``up``, ``doctor``, ``token``, ``migrate``, ``rotate-kek``, ``openapi``
and ``manifest validate`` (they act on the data directory and the database, not through the API)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from functions import supervisor
from functions.cli_common import say, settings_for
from functions.cli_up import UpOptions, up

DATA_HELP = "data directory (default: MARKETPLACE_DATA_DIR or a per-user folder)"


class PositiveInt(click.ParamType):  # type: ignore[type-arg]
    """A whole number of at least 1."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value))
            except ValueError:
                self.fail(f"not a whole number: {value!r}", param, ctx)
        if number < 1:
            self.fail("must be at least 1", param, ctx)
        return number


def _remember_data_dir(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # The services read their settings from the environment: the flag wins over it.
    if value:
        os.environ["MARKETPLACE_DATA_DIR"] = str(Path(value).expanduser().resolve())
    return value


def data_dir_option(func: Any) -> Any:
    """``--data-dir``, exported to the environment the services read."""
    return click.option("--data-dir", default=None, help=DATA_HELP, callback=_remember_data_dir,
                        expose_value=True, is_eager=True)(func)


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="the port (0: any free port)")
@data_dir_option
@click.option("--log-format", type=click.Choice(["auto", "human", "json"]), default="auto", show_default=True,
              help="log lines: human on a terminal and JSON otherwise (auto), or always one of them")
@click.option("--workers", type=int, default=2, show_default=True, help="local data-plane workers")
@click.option("--http-workers", type=PositiveInt(), default=None,
              help="HTTP server processes (default: one per core, at most 4)")
@click.option("--threads", type=PositiveInt(), default=None,
              help="request threads per HTTP server process (default: 64)")
def up_command(*, host: str, port: int, data_dir: str | None, log_format: str, workers: int,
               http_workers: int | None, threads: int | None) -> int:
    """Run the platform locally (embedded PostgreSQL, the API, workers)."""
    return up(UpOptions(host=host, port=port, data_dir=data_dir, workers=workers, http_workers=http_workers,
                        threads=threads, log_format=log_format))


@click.command("doctor")
@data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="the port marketplace up uses")
@click.option("--json", "as_json", is_flag=True, help="JSON even on a terminal")
def doctor_command(data_dir: str | None, host: str, port: int, as_json: bool) -> int:
    """Check the local platform and report each check as ok or failed (functions/doctor_checks.py)."""
    from functions.doctor_checks import run_doctor  # noqa: PLC0415

    return run_doctor(settings_for(data_dir), host=host, port=port, as_json=True if as_json else None)


@click.command("token")
@click.option("--email", required=True)
@click.option("--platform-admin", is_flag=True)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="print access and refresh tokens as JSON")
def token_command(email: str, platform_admin: bool, data_dir: str | None, as_json: bool) -> int:
    """Print an access token for a user (local mode), creating the user."""
    from shared.composition import build_container  # noqa: PLC0415

    settings = settings_for(data_dir)
    if settings.mode != "local":
        say("marketplace token works in local mode only")
        return 2
    if not supervisor.cluster_present(settings, "marketplace token"):  # never create a cluster here
        return 1
    container = build_container(settings)
    try:
        pair = container.identity.dev_grant(email, platform_admin=True if platform_admin else None)
    finally:
        container.close()
    if as_json:
        say(json.dumps({"access_token": pair.access_token, "refresh_token": pair.refresh_token,
                        "expires_in": pair.expires_in}))
    else:
        say(pair.access_token)
    return 0


@click.command("migrate")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="print the schema version as JSON")
def migrate_command(data_dir: str | None, as_json: bool) -> int:
    """Apply database migrations."""
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.db.migrate import schema_version  # noqa: PLC0415

    container = build_container(settings_for(data_dir))
    try:
        version = schema_version(container.db)
    finally:
        container.close()
    say(json.dumps({"schema_version": version}) if as_json else f"schema version {version}")
    return 0


@click.command("rotate-kek")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")
def rotate_kek_command(data_dir: str | None, as_json: bool) -> int:
    """Rotate the key-encryption key and re-wrap the data keys.

    A new key file locally, a new primary version in Cloud KMS; running servers keep working."""
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.errors import AppError  # noqa: PLC0415
    from shared.secrets import KekError  # noqa: PLC0415

    container = build_container(settings_for(data_dir))
    try:
        done = container.secrets.rotate_kek()
    except (KekError, AppError) as exc:
        say(f"marketplace: the key-encryption key was not rotated: {exc}")
        return 1
    finally:
        container.close()
    say(json.dumps({"kek_version": done.kek_version, "rewrapped": done.rewrapped}) if as_json
        else f"key-encryption key {done.kek_version}: {done.rewrapped} data keys re-wrapped")
    return 0


@click.command("openapi")
@click.option("--gateway", is_flag=True, help="API Gateway (OpenAPI 2.0) config instead")
@click.option("--project", default=lambda: os.environ.get("GOOGLE_CLOUD_PROJECT", "PROJECT_ID"))
@click.option("--region", default=lambda: os.environ.get("GOOGLE_CLOUD_REGION", "us-central1"))
@click.option("--reads-per-minute", type=int, default=60_000,
              help="API Gateway quota: GET calls per minute, per consumer project (default 60000)")
@click.option("--writes-per-minute", type=int, default=20_000,
              help="API Gateway quota: other calls per minute, per consumer project (default 20000)")
def openapi_command(gateway: bool, project: str, region: str, reads_per_minute: int, writes_per_minute: int) -> int:
    """Print the OpenAPI document (JSON), or the API Gateway config."""
    import yaml  # noqa: PLC0415

    from functions.main import load_operations  # noqa: PLC0415
    from functions.openapi import gateway_document, openapi_document  # noqa: PLC0415

    load_operations()
    if gateway:
        say(yaml.safe_dump(gateway_document(project=project, region=region, reads_per_minute=reads_per_minute,
                                            writes_per_minute=writes_per_minute), sort_keys=False))
    else:
        say(json.dumps(openapi_document(), indent=2, sort_keys=True))
    return 0


@click.group("manifest")
def manifest_group() -> None:
    """Work with agent manifests."""


@manifest_group.command("validate")
@click.argument("file")
def manifest_validate_command(file: str) -> int:
    """Validate a manifest FILE (YAML or JSON, "-" for stdin); print the verdict (JSON) and exit 1
    when it is invalid."""
    from shared.catalog import check_manifest, verdict_out  # noqa: PLC0415

    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"marketplace: cannot read {file}: {exc}", file=sys.stderr)
        return 2
    verdict = check_manifest(manifest_yaml=text)
    say(json.dumps(verdict_out(verdict).model_dump(mode="json"), indent=2, ensure_ascii=False))
    for problem in verdict.problems:
        print(f"{file}: {problem['path'] or '(document)'}: {problem['message']}", file=sys.stderr)
    return 0 if verdict.ok else 1


OPERATOR_COMMANDS: list[click.Command] = [up_command, doctor_command, token_command, migrate_command,
                                          rotate_kek_command, openapi_command, manifest_group]
