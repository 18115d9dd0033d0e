"""``GET /health``: ready once the database answers; reports the versions."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel

from functions.operation import Call, operation
from shared.kernel.db.migrate import schema_version


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


@operation("GET", "/health", summary="Report readiness and versions", tags=["health"], auth=False,
           response=HealthOut)
def health(call: Call) -> HealthOut:
    db = call.services.db
    with db.transaction() as tx:
        server = str(tx.fetch_val("SHOW server_version"))
    return HealthOut(status="ok", platform_version=platform_version(), database_version=server,
                     schema_version=schema_version(db), mode=call.services.settings.mode)
