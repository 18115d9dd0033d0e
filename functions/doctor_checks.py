"""``marketplace doctor``: each check reported as ok or failed (issue 19, item 5).

Checks, in order: the data directory's permissions, the port, PostgreSQL, the API's health, and
leftover processes (a platform's processes still running without the ``marketplace up`` that
started them). Nothing is started or changed. On a terminal each check is one line; piped (or with
``--json``) the report is JSON: the facts (versions, data directory, PostgreSQL) and ``checks``, a
list of ``{"check", "status": "ok"|"failed", "detail"}``. The exit status is 1 when a check failed.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from functions.supervisor import has_cluster, read_lock_info
from shared.kernel.settings import Settings


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": "ok" if self.ok else "failed", "detail": self.detail}


def check_data_dir(data_dir: Path) -> Check:
    if not data_dir.exists():
        return Check("data directory", False, f"{data_dir} does not exist (marketplace up creates it)")
    if not data_dir.is_dir():
        return Check("data directory", False, f"{data_dir} is not a directory")
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        return Check("data directory", False, f"{data_dir} is not readable and writable by uid {os.geteuid()}")
    mode = data_dir.stat().st_mode
    if mode & stat.S_IWOTH:
        return Check("data directory", False, f"{data_dir} is writable by everyone (mode {stat.filemode(mode)}): "
                                              "chmod o-w it")
    keys = data_dir / "keys"
    if keys.exists() and keys.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check("data directory", False, f"{keys} is open to other users: chmod 700 it")
    return Check("data directory", True, f"{data_dir} ({stat.filemode(mode)}, owner uid {data_dir.stat().st_uid})")


def _port_free(host: str, port: int) -> bool:
    from functions.serve import ServerError, check_free  # noqa: PLC0415

    try:
        check_free(host, port)
    except ServerError:
        return False
    return True


def run_doctor(settings: Settings, *, host: str, port: int, as_json: bool | None = None) -> int:
    """Run every check, print the report, return the exit status."""
    from functions.health import platform_version  # noqa: PLC0415
    from shared.kernel.adapters.embedded_pg import EmbeddedPostgres  # noqa: PLC0415

    data_dir = settings.data_dir
    report: dict[str, Any] = {"platform_version": platform_version(), "mode": settings.mode,
                              "data_dir": str(data_dir), "python": sys.version.split()[0]}
    checks = [check_data_dir(data_dir)]
    supervisor = read_lock_info(data_dir) if data_dir.is_dir() else None
    url = (supervisor or {}).get("url") or f"http://{host}:{port}"
    report["supervisor"] = supervisor

    checks.append(_check_port(supervisor, url, host, port))

    # PostgreSQL.
    info = None
    if settings.mode != "local" or settings.database_url is not None:
        checks.append(Check("postgresql", True, "an external database (MARKETPLACE_DATABASE_URL); not checked here"))
    elif not has_cluster(data_dir):
        checks.append(Check("postgresql", False, f"no PostgreSQL cluster in {data_dir}: marketplace up creates it"))
    else:
        info = EmbeddedPostgres(data_dir).running()
        if info is None:
            checks.append(Check("postgresql", False, f"PostgreSQL of {data_dir} is stopped (not running)"))
        else:
            checks.append(_check_database(settings, info, report))
    report["postgres"] = ({"running": True, "host": info.host, "port": info.port, "pid": info.pid,
                           "version": info.version} if info else {"running": False})

    checks.append(_check_api(url))

    # Leftovers: a platform's processes on this data directory without its supervisor.
    if supervisor is not None:
        checks.append(Check("leftover processes", True, f"none: marketplace up (pid {supervisor.get('pid', '?')}) "
                                                        "owns the running processes"))
    else:
        left = leftover_processes(data_dir)
        if info is not None:
            left.insert(0, f"PostgreSQL (pid {info.pid})")
        if left:
            checks.append(Check("leftover processes", False, f"{', '.join(left[:10])} still running on {data_dir} "
                                                             "without marketplace up; stop them"))
        else:
            checks.append(Check("leftover processes", True, "none"))

    report["checks"] = [c.to_json() for c in checks]
    if as_json is None:
        as_json = not sys.stdout.isatty()
    if as_json:
        print(json.dumps(report, indent=2), flush=True)
    else:
        print(f"marketplace {report['platform_version']} · {settings.mode} mode · {data_dir}")
        for c in checks:
            print(f"  {'ok    ' if c.ok else 'FAILED'}  {c.name}: {c.detail}")
    return 0 if all(c.ok for c in checks) else 1


def _check_port(supervisor: dict[str, Any] | None, url: str, host: str, port: int) -> Check:
    """Free for a new ``up``, or served by this data directory's running ``up``."""
    if supervisor is not None:
        return Check("port", True, f"{url} is served by marketplace up (pid {supervisor.get('pid', '?')})")
    if _port_free(host, port):
        return Check("port", True, f"{host}:{port} is free for marketplace up")
    return Check("port", False, f"{host}:{port} is in use by another program (marketplace up is not running on "
                                "this data directory): pick another --port or stop it")


def _check_api(url: str) -> Check:
    try:
        resp = httpx.get(f"{url}/health", timeout=3)
    except httpx.HTTPError as exc:
        return Check("api health", False, f"nothing answers at {url}/health ({type(exc).__name__}): "
                                          "is marketplace up running?")
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code == 200:
        return Check("api health", True, f"{url}/health: {body.get('status', 'ok')}")
    return Check("api health", False, f"{url}/health answered {resp.status_code}: {json.dumps(body)[:300]}")


def _check_database(settings: Settings, info: Any, report: dict[str, Any]) -> Check:
    from shared.composition import build_container  # noqa: PLC0415
    from shared.kernel.db.migrate import load_migrations, schema_version  # noqa: PLC0415

    try:
        container = build_container(settings, migrate=False)
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        return Check("postgresql", False, f"running (pid {info.pid}) but not reachable: {exc}")
    try:
        report["schema_version"] = schema_version(container.db)
        report["schema_latest"] = load_migrations()[-1].version
    finally:
        container.close()
    behind = report["schema_version"] != report["schema_latest"]
    detail = (f"PostgreSQL {info.version} on {info.host}:{info.port} (pid {info.pid}), schema "
              f"{report['schema_version']}/{report['schema_latest']}")
    return Check("postgresql", not behind, detail + (" (run marketplace migrate)" if behind else ""))


def leftover_processes(data_dir: Path) -> list[str]:
    """Processes (other than PostgreSQL, checked on its own) whose command line or environment
    names ``data_dir``: servers and workers of a platform whose supervisor is gone."""
    needle = str(data_dir.resolve()).encode()
    me = os.getpid()
    found: list[str] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if b"postgres" in cmdline.split(b"\0", 1)[0] or b"doctor" in cmdline:
            continue
        if needle in cmdline or b"MARKETPLACE_DATA_DIR=" + needle + b"\0" in environ:
            name = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()[:80]
            found.append(f"pid {entry.name} ({name})")
    return found
