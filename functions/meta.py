"""The API's own description: ``GET /openapi.json``."""

from __future__ import annotations

from functions.health import platform_version
from functions.openapi import openapi_document
from functions.operation import Call, operation


@operation("GET", "/openapi.json", summary="The OpenAPI 3.1 document", tags=["meta"], auth=False)
def get_openapi(call: Call) -> dict[str, object]:
    return openapi_document(server_url=call.services.settings.public_url, version=platform_version())
