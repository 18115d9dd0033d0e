"""Log lines Cloud Logging understands (issue 19, item 6), and quiet idle workers (item 5): every JSON
line carries ``severity``, the lines of a request carry its trace from ``X-Cloud-Trace-Context`` or
``traceparent``, the access line carries ``httpRequest``; a data plane's successful polls log at DEBUG."""

from __future__ import annotations

import io
import json
import logging

import pytest
from runs_support import claim, install_builtin

from shared.kernel.jsonlog import HumanFormatter, JsonFormatter

TRACE = "105445aa7843bc8bf206b12000100000"


def test_cloud_logging_fields(anon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "acme-prod")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("functions.gateway")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert anon.get("/health?probe=1", headers={"X-Cloud-Trace-Context": f"{TRACE}/42;o=1",
                                                   "User-Agent": "probe/1.0"}).status == 200
        assert anon.get("/agents/agt_doesnotexist0000", headers={
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}).status == 404
        assert anon.get("/health", headers={"X-Cloud-Trace-Context": "not a trace"}).status == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    found = [json.loads(line) for line in stream.getvalue().splitlines()]
    first, second, third = (entry for entry in found if "httpRequest" in entry)
    assert first["severity"] == "INFO"
    assert first["logging.googleapis.com/trace"] == f"projects/acme-prod/traces/{TRACE}"
    assert first["logging.googleapis.com/spanId"] == f"{42:016x}"
    assert first["logging.googleapis.com/trace_sampled"] is True
    http = first["httpRequest"]
    assert http["requestMethod"] == "GET" and http["status"] == 200 and http["requestUrl"].endswith("/health")
    assert "probe=1" not in http["requestUrl"]  # a query may carry a credential
    assert http["latency"].endswith("s") and float(http["latency"][:-1]) >= 0 and http["userAgent"] == "probe/1.0"
    assert second["logging.googleapis.com/trace"] == "projects/acme-prod/traces/0af7651916cd43dd8448eb211c80319c"
    assert second["logging.googleapis.com/spanId"] == "b7ad6b7169203331" and second["httpRequest"]["status"] == 404
    assert "logging.googleapis.com/trace" not in third  # a malformed header is ignored


def test_idle_data_plane_polls_are_debug(container, make_org, anon, settings) -> None:
    inst = install_builtin(container, make_org, anon, settings)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("functions.gateway")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        assert claim(anon, inst.key, wait=0) is None  # nothing to do: an idle worker's poll
        assert anon.get(f"/agents/{inst.agent_id}", token=inst.admin.token).status == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    found = [json.loads(line) for line in stream.getvalue().splitlines() if "httpRequest" in line]
    levels = {entry["operation"]: entry["level"] for entry in found}
    assert levels["next_task"] == "DEBUG" and levels["get_agent"] == "INFO", levels


def test_human_lines_are_short_and_redacted() -> None:
    record = logging.LogRecord("functions.gateway", logging.INFO, __file__, 1, "GET %s %s", ("/orgs", 200), None)
    record.fields = {"duration_ms": 3.2, "operation": "list_orgs", "api_key": "mk.abc.0123456789abcdef0123",
                     "httpRequest": {"status": 200}}
    line = HumanFormatter().format(record)
    assert "INFO" in line and "gateway: GET /orgs 200 (3.2 ms)" in line
    assert "0123456789abcdef0123" not in line and "{" not in line
