"""OpenAPI 3.1 generated from the registered operations, and the API Gateway (2.0) export."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from functions.operation import REGISTRY, Operation, Registry

_REF = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message", "details"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}}}}},
}


_ERROR_TITLES = {400: "Bad request", 401: "Not authenticated", 403: "Not allowed",
                 404: "Not found (also: not a member of the org)", 409: "Conflict", 413: "Body too large",
                 415: "Body is not JSON", 422: "Validation failed", 429: "Too many requests",
                 503: "Unavailable: retry after Retry-After"}


def _error_responses(op: Operation) -> dict[str, Any]:
    """Each error status the operation can answer, with the ``error.code`` values it can carry."""
    responses: dict[str, Any] = {}
    for status, codes in op.errors.items():
        listed = ", ".join(f"`{code}`" for code in codes)
        schema = {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {
            "properties": {"code": {"enum": [str(code) for code in codes]}}}}}
        responses[str(status)] = {"description": f"{_ERROR_TITLES.get(status, 'Error')}: {listed}",
                                  "content": {"application/json": {"schema": schema}}}
        if status in (429, 503):
            responses[str(status)]["headers"] = {"Retry-After": {
                "description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}}
    return responses


def _success_content(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = {"schema": refs[(op.response, "serialization")]}
    elif not op.media:
        content["application/json"] = {"schema": {"type": "object"}}
    for media, schema in op.media.items():
        content[media] = {"schema": dict(schema) if schema is not None
                          else {"type": "string", "contentMediaType": media}}
    return content


def openapi_document(registry: Registry = REGISTRY, *, server_url: str | None = None,
                     version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered operation."""
    # Push targets (Cloud Tasks, Cloud Scheduler) are called by Google at the function's own
    # URL, never through the API: they are not part of it.
    ops = [op for op in registry if not op.push]
    models: list[tuple[type[BaseModel], Any]] = []
    for op in ops:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    refs, defs = models_json_schema(models, ref_template=_REF) if models else ({}, {})
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Error"] = ERROR_SCHEMA
    paths: dict[str, Any] = {}
    for op in ops:
        entry: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "tags": list(op.tags)}
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in op.path_params]
        if op.query is not None:
            qschema = op.query.model_json_schema(ref_template=_REF)
            schemas.update(qschema.pop("$defs", {}))
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        for header, meaning in op.headers.items():
            params.append({"name": header, "in": "header", "required": False, "schema": {"type": "string"},
                           "description": meaning})
        if op.idempotent:
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "maxLength": 255},
                           "description": "Replays the first response for the same key and request."})
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": refs[(op.body, "validation")]}}}
        if op.accepts:
            entry["requestBody"] = {
                "required": True, "description": "; ".join(f"{m}: {meaning}" for m, meaning in op.accepts.items()),
                "content": {m: {"schema": {"type": "string", "contentMediaType": m}} for m in op.accepts}}
        content = _success_content(op, refs)
        successes: dict[str, Any] = {}
        for status, text in {op.status: "Success", **op.also}.items():
            successes[str(status)] = {"description": text}
            if status != 204:
                successes[str(status)]["content"] = content
        entry["responses"] = {**dict(sorted(successes.items())), **_error_responses(op)}
        entry["security"] = ([{}, {"bearer": []}] if op.anonymous else [{"bearer": []}]) if op.auth else []
        if op.platform_admin:
            entry["x-platform-admin"] = True
        if op.dataplane:
            entry["x-dataplane"] = True
        if op.roles is not None:
            entry["x-roles"] = sorted(r.value for r in op.roles)
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Agent Marketplace API", "version": version,
                 "description": "Publish, install, run and pay for AI agents."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "An access token (JWT) or an org API key (mk.<id>.<secret>)."}}},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


# API Gateway's quotas (per minute and per consumer project, the only kind it has): a read and
# a write metric, each operation costing 1 of one of them. A call with a Google API key is charged
# to that key's project; every other call to the producer project, so without API keys these are
# a ceiling on the whole API that protects the functions and the database before a request reaches
# them. The per-caller limits are the platform's own (shared/identity/rate_limits.py).
GATEWAY_READS_PER_MINUTE = 60_000
GATEWAY_WRITES_PER_MINUTE = 20_000


def _gateway_management(reads: int, writes: int) -> dict[str, Any]:
    metrics = [("read-requests", "Read requests", reads), ("write-requests", "Write requests", writes)]
    return {
        "metrics": [{"name": name, "displayName": shown, "valueType": "INT64", "metricKind": "DELTA"}
                    for name, shown, _ in metrics],
        "quota": {"limits": [{"name": f"{name}-per-minute", "metric": name, "unit": "1/min/{project}",
                              "values": {"STANDARD": limit}} for name, _, limit in metrics]},
    }


def gateway_document(registry: Registry = REGISTRY, *, project: str, region: str,
                     title: str = "agent-marketplace", reads_per_minute: int = GATEWAY_READS_PER_MINUTE,
                     writes_per_minute: int = GATEWAY_WRITES_PER_MINUTE) -> dict[str, Any]:
    """An API Gateway config (OpenAPI 2.0): one ``x-google-backend`` per operation's function,
    and the quotas every operation draws on (``x-google-management``, ``x-google-quota``)."""
    paths: dict[str, Any] = {}
    for op in registry:
        if op.push or "internal" in op.tags:  # called by Google services at the function's own URL
            continue
        metric = "read-requests" if op.method in ("GET", "HEAD") else "write-requests"
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "x-google-backend": {
                "address": f"https://{region}-{project}.cloudfunctions.net/{op.name}",
                "path_translation": "APPEND_PATH_TO_ADDRESS",
                "deadline": 60.0,
            },
            "parameters": [{"name": p, "in": "path", "required": True, "type": "string"}
                           for p in op.path_params],
            "responses": {str(op.status): {"description": "Success"}},
        }
        if op.rate_limited:
            entry["x-google-quota"] = {"metricCosts": {metric: 1}}
            entry["responses"]["429"] = {"description": "Too many requests (retry after Retry-After)"}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {"swagger": "2.0", "info": {"title": title, "version": "1.0.0"}, "schemes": ["https"],
            "produces": ["application/json"],
            "x-google-management": _gateway_management(reads_per_minute, writes_per_minute), "paths": paths}
