"""The gateway's access line, one per request, and the request's trace (issue 19, items 5 and 6).

Every line logged while a request is handled carries its trace (``logging.googleapis.com/trace`` in
JSON; see ``shared.kernel.jsonlog``) read from ``traceparent`` or ``X-Cloud-Trace-Context``. The
access line carries Cloud Logging's ``httpRequest`` (method, URL without its query — a query may
hold a credential —, status, latency, user agent, remote address, protocol, response size).

Data-plane calls that succeed (a worker polling for work, heartbeats, log batches) are logged at
DEBUG: an idle worker polls all day, and at INFO the terminal of ``marketplace up`` would show
nothing else. The worker itself logs, at INFO, each run it starts and finishes.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any
from urllib.parse import quote

import flask

from shared.kernel.jsonlog import (
    RequestTrace,
    parse_trace_headers,
    redact_text,
    reset_request_trace,
    set_request_trace,
)

_log = logging.getLogger("functions.gateway")


def begin(request: flask.Request) -> contextvars.Token[RequestTrace | None]:
    """Bind the request's trace (if it came with one) to every line logged while it is handled."""
    headers = {name: request.headers.get(name, "") for name in ("traceparent", "X-Cloud-Trace-Context")}
    return set_request_trace(parse_trace_headers(headers))


def end(token: contextvars.Token[RequestTrace | None]) -> None:
    reset_request_trace(token)


def http_request(request: flask.Request, status: int, seconds: float, response_size: int | None) -> dict[str, Any]:
    """Cloud Logging's ``HttpRequest`` of a request. Its free texts (the URL's path, the user agent)
    are redacted here, raw: once serialized as JSON, a credential's quotes and line breaks are
    escaped and its shape no longer matches the redaction rule."""
    entry: dict[str, Any] = {
        "requestMethod": request.method,
        # Redacted decoded (as the message's path is), then quoted again: a percent-encoded credential
        # would not match the redaction rule's shapes.
        "requestUrl": request.host_url.rstrip("/") + quote(redact_text(request.path), safe="/[]@:"),
        "status": status,
        "latency": f"{seconds:.6f}s",
        "remoteIp": request.remote_addr,
        "protocol": request.environ.get("SERVER_PROTOCOL"),
    }
    if request.user_agent.string:
        entry["userAgent"] = redact_text(request.user_agent.string[:512])
    if request.content_length:
        entry["requestSize"] = str(request.content_length)
    if response_size is not None:
        entry["responseSize"] = str(response_size)
    return entry


def log_access(*, method: str, path: str, status: int, dataplane: bool, fields: dict[str, Any],
               request: flask.Request, seconds: float, response_size: int | None) -> None:
    """The access line: DEBUG for a data plane's successful calls, INFO otherwise."""
    level = logging.DEBUG if dataplane and status < 400 else logging.INFO
    if not _log.isEnabledFor(level):
        return
    fields = {**fields, "httpRequest": http_request(request, status, seconds, response_size)}
    _log.log(level, "%s %s %s", method, path, status, extra={"fields": fields})
