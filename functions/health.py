"""``GET /health``: ready once the database answers; reports the versions."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel

from functions.operation import Call, operation
from shared.kernel.db.migrate import database_version, schema_version
from shared.kernel.errors import DatabaseUnavailable


class HealthOut(BaseModel):
    status: str
    platform_version: str
    database_version: str
    schema_version: int
    mode: str


def platform_version() -> str:
    """The installed package's version."""
    try:
        return version("agent-marketplace")
    except PackageNotFoundError:
        return "0+unknown"


@operation("GET", "/health", summary="Report readiness and versions, or what is down", tags=["health"], auth=False,
           response=HealthOut)
def health(call: Call) -> HealthOut:
    """200 with the versions once everything answers; 503 (the SPEC error body, ``Retry-After``)
    naming what is down otherwise."""
    db = call.services.db
    try:
        server = database_version(db)
        schema = schema_version(db)
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable("the database is down", details=[
            {"component": "database", "status": "down", "message": exc.message}]) from exc
    return HealthOut(status="ok", platform_version=platform_version(), database_version=server,
                     schema_version=schema, mode=call.services.settings.mode)
