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
import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from shared.kernel.jsonlog import (
    REDACTED,
    RedactedJson,
    RequestTrace,
    parse_trace_headers,
    redact_text,
    reset_request_trace,
    set_request_trace,
)

_log = logging.getLogger("functions.gateway")


def begin(environ: Mapping[str, Any]) -> contextvars.Token[RequestTrace | None]:
    """Bind the request's trace (if it came with one) to every line logged while it is handled."""
    parent, cloud = environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_X_CLOUD_TRACE_CONTEXT")
    trace = (parse_trace_headers({"traceparent": parent or "", "X-Cloud-Trace-Context": cloud or ""})
             if parent or cloud else None)
    return set_request_trace(trace)


def end(token: contextvars.Token[RequestTrace | None]) -> None:
    reset_request_trace(token)


_HOST = re.compile(r"(?:[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_DEFAULT_PORT = {"http": ":80", "https": ":443"}
_METHOD = re.compile(r"[A-Z]{1,16}")
_PROTOCOL = re.compile(r"HTTP/[0-9](?:\.[0-9])?")


def _token(value: Any, shape: re.Pattern[str]) -> str:
    """A request-line token (the method, the protocol) as it is when it has the usual shape, else
    redacted like any free text."""
    text = str(value or "")[:32]
    return text if shape.fullmatch(text) else redact_text(text)


def _host_url(environ: Mapping[str, Any]) -> str:
    """``scheme://host`` of the request as werkzeug's ``host_url`` gives it (the default port
    dropped); a Host header that is not a host name (user info, odd characters) is shown redacted."""
    scheme = environ.get("wsgi.url_scheme") or "http"
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        return f"{scheme}://{REDACTED}"
    default_port = _DEFAULT_PORT.get(scheme)
    if default_port and host.endswith(default_port):
        host = host.rsplit(":", 1)[0]
    return f"{scheme}://{redact_text(host)}"


def http_request(environ: Mapping[str, Any], path: str, status: int, seconds: float,
                 response_size: int | None) -> RedactedJson:
    """Cloud Logging's ``HttpRequest`` of a request, serialized. Each free text (the method, the
    URL's path, the user agent, the protocol) is redacted here, raw: once serialized as JSON, a
    credential's quotes and line breaks are escaped and its shape no longer matches the redaction
    rule; the JSON formatter then adds it to the line as it is (``RedactedJson``)."""
    entry: dict[str, Any] = {
        "requestMethod": _token(environ.get("REQUEST_METHOD"), _METHOD),
        # Redacted decoded (as the message's path is), then quoted again: a percent-encoded credential
        # would not match the redaction rule's shapes.
        "requestUrl": _host_url(environ) + quote(redact_text(path), safe="/[]@:"),
        "status": status,
        "latency": f"{seconds:.6f}s",
        "remoteIp": environ.get("REMOTE_ADDR"),
        "protocol": _token(environ.get("SERVER_PROTOCOL"), _PROTOCOL),
    }
    agent = environ.get("HTTP_USER_AGENT")
    if agent:
        entry["userAgent"] = redact_text(str(agent)[:512])
    length = environ.get("CONTENT_LENGTH")
    if length and str(length).isdigit() and int(length):
        entry["requestSize"] = str(int(length))
    if response_size is not None:
        entry["responseSize"] = str(response_size)
    return RedactedJson(json.dumps(entry, ensure_ascii=False))


def log_access(*, method: str, path: str, status: int, dataplane: bool, fields: dict[str, Any],
               environ: Mapping[str, Any], seconds: float, response_size: int | None) -> None:
    """The access line: DEBUG for a data plane's successful calls, INFO otherwise."""
    level = logging.DEBUG if dataplane and status < 400 else logging.INFO
    if not _log.isEnabledFor(level):
        return
    fields = {**fields, "httpRequest": http_request(environ, path, status, seconds, response_size)}
    # Made and handed to the handlers directly: ``Logger.log`` would first walk the stack for the
    # caller's file and line, which the line does not show.
    record = _log.makeRecord(_log.name, level, __file__, 0, "%s %s %s", (method, path, status), None,
                             extra={"fields": fields})
    _log.handle(record)
