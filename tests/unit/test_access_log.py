"""The access line's ``httpRequest`` is built from the WSGI environ, redacted field by field, and put
into the JSON line after the formatter's own pass (functions/access_log.py, shared/kernel/jsonlog.py)."""

from __future__ import annotations

import json
import logging
from typing import Any

from functions.access_log import http_request
from shared.kernel.jsonlog import JsonFormatter, RedactedJson

GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5" * 4
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


def _environ(**overrides: Any) -> dict[str, Any]:
    base = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8080",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": "probe/1.0"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def _entry(environ: dict[str, Any], path: str = "/me", size: int | None = 12) -> dict[str, Any]:
    value = http_request(environ, path, 200, 0.0123, size)
    assert isinstance(value, RedactedJson)
    parsed: dict[str, Any] = json.loads(value.json)
    return parsed


def test_the_fields_cloud_logging_reads() -> None:
    entry = _entry(_environ(CONTENT_LENGTH="17"))
    assert entry == {"requestMethod": "GET", "requestUrl": "http://127.0.0.1:8080/me", "status": 200,
                     "latency": "0.012300s", "remoteIp": "127.0.0.1", "protocol": "HTTP/1.1",
                     "userAgent": "probe/1.0", "requestSize": "17", "responseSize": "12"}


def test_default_ports_are_dropped_as_werkzeug_does() -> None:
    assert _entry(_environ(HTTP_HOST="api.example.com:443", **{"wsgi.url_scheme": "https"}))["requestUrl"] == \
        "https://api.example.com/me"
    assert _entry(_environ(HTTP_HOST="api.example.com:80"))["requestUrl"] == "http://api.example.com/me"
    assert _entry(_environ(HTTP_HOST=None, SERVER_NAME="10.0.0.1", SERVER_PORT="8080"))["requestUrl"] == \
        "http://10.0.0.1:8080/me"


def test_a_host_header_that_is_not_a_host_name_is_redacted() -> None:
    for host in (f"user:{GITHUB_TOKEN}@evil.example", "evil example", 'a"b@c'):
        assert _entry(_environ(HTTP_HOST=host))["requestUrl"] == "http://[REDACTED]/me"
    url = _entry(_environ(HTTP_HOST=f"{AWS_KEY}.example.com"))["requestUrl"]  # a host name's shape, a key in it
    assert AWS_KEY not in url and url.endswith(".example.com/me")


def test_free_texts_are_redacted_one_by_one() -> None:
    entry = _entry(_environ(HTTP_USER_AGENT=f"curl/8 token={GITHUB_TOKEN}", REQUEST_METHOD=AWS_KEY,
                            SERVER_PROTOCOL=f"HTTP/1.1 {AWS_KEY}"), path=f"/orgs/{GITHUB_TOKEN}")
    text = json.dumps(entry)
    assert GITHUB_TOKEN not in text and AWS_KEY not in text
    assert entry["requestUrl"].startswith("http://127.0.0.1:8080/orgs/")


def test_the_line_is_one_json_object_with_the_request_spliced_in() -> None:
    record = logging.LogRecord("functions.gateway", logging.INFO, __file__, 1, "GET %s %s", ("/me", 200), None)
    record.fields = {"request_id": "req_1", "api_key": GITHUB_TOKEN,
                     "httpRequest": http_request(_environ(), "/me", 200, 0.001, None)}
    line = JsonFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["httpRequest"]["requestUrl"] == "http://127.0.0.1:8080/me" and parsed["request_id"] == "req_1"
    assert GITHUB_TOKEN not in line  # the rest of the line still passes the redaction rule
