"""Agent runs for users: start, read, list, cancel, and the logs (also as a live stream)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import flask

from functions.operation import ANY_MEMBER, Call, operation
from shared.kernel.errors import ErrorCode
from shared.kernel.money import usd_to_micros
from shared.kernel.pagination import Page
from shared.runs import (
    REPORT_CSP,
    LogPage,
    LogQuery,
    RunCreate,
    RunCreated,
    RunListQuery,
    RunOut,
    RunService,
    RunSummary,
    render_report_page,
)

# A live stream polls for new lines this often, sends a comment to keep proxies from closing an
# idle connection this often, and ends after this long (the client reconnects with Last-Event-ID).
STREAM_POLL_SECONDS = 0.2
STREAM_KEEPALIVE_SECONDS = 15.0
STREAM_MAX_SECONDS = 600.0
_STREAM_BATCH = 500
# One event of the live stream, as OpenAPI 3.1 describes an event stream: the schema of each event.
LOG_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["log", "end", "timeout"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "log: one log line (as in LogPage.items); end and timeout: "
                                "{run_id, status, last_seq}"},
        "id": {"type": "string", "description": "A log line's seq: reconnect with Last-Event-ID to resume."},
        "retry": {"type": "integer"},
    },
}


# The caller's roles come with its authentication (one statement): the run's org is learnt from
# the deployment, and the role check needs no statement of its own.
@operation("POST", "/agents/{agent_id}/runs", summary="Start a run", tags=["runs"], body=RunCreate,
           response=RunCreated, status=201, memberships=True,
           errors={409: (ErrorCode.DEPLOYMENT_NOT_READY, ErrorCode.AGENT_SUSPENDED, ErrorCode.SPEND_FROZEN,
                         ErrorCode.BUDGET_EXCEEDED)})
def create_run(call: Call) -> RunCreated:
    body: RunCreate = call.body
    return call.services.runs.create(call.caller, call.params["agent_id"], body.deployment_id, body.inputs,
                                     max_charge_micros=None if body.max_charge_usd is None  # billing (issue 16)
                                     else usd_to_micros(body.max_charge_usd))


@operation("GET", "/agents/{agent_id}/runs/{run_id}", summary="Read a run", tags=["runs"], response=RunOut)
def get_run(call: Call) -> RunOut:
    return call.services.runs.get(call.caller, call.params["agent_id"], call.params["run_id"])


@operation("GET", "/orgs/{org_id}/runs", summary="List runs", tags=["runs"], roles=ANY_MEMBER,
           query=RunListQuery, response=Page[RunSummary])
def list_runs(call: Call) -> Page[RunSummary]:
    return call.services.runs.page(call.org_id, call.query)


@operation("POST", "/agents/{agent_id}/runs/{run_id}/cancel", summary="Cancel a run", tags=["runs"],
           response=RunOut)
def cancel_run(call: Call) -> RunOut:
    return call.services.runs.cancel(call.caller, call.params["agent_id"], call.params["run_id"])


@operation("GET", "/agents/{agent_id}/runs/{run_id}/logs", summary="Read a run's logs", tags=["runs"],
           query=LogQuery, response=LogPage,
           media={"text/event-stream": LOG_EVENT_SCHEMA},
           headers={"Accept": "text/event-stream for the live stream (as stream=true)",
                    "Last-Event-ID": "Resume the live stream after this seq"})
def get_run_logs(call: Call) -> LogPage | flask.Response:
    runs: RunService = call.services.runs
    agent_id, run_id = call.params["agent_id"], call.params["run_id"]
    q: LogQuery = call.query
    if q.stream or "text/event-stream" in call.request.headers.get("Accept", ""):
        runs.get(call.caller, agent_id, run_id)  # access check before the stream starts
        after = _last_event_id(call.request.headers.get("Last-Event-ID"), q.after_seq)
        resp = flask.Response(_follow(runs, run_id, after), mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Accel-Buffering"] = "no"  # no proxy buffering of a live stream
        return resp
    return runs.log_page(call.caller, agent_id, run_id, after_seq=q.after_seq, limit=q.limit)


def _last_event_id(header: str | None, default: int) -> int:
    if header and header.strip().isdigit():
        return max(int(header.strip()), default)
    return default


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


def _follow(runs: RunService, run_id: str, after_seq: int) -> Iterator[str]:
    """Server-Sent Events: every log line (``event: log``, ``id: <seq>``) until the run ends
    (``event: end`` with the final status) or ``STREAM_MAX_SECONDS`` pass (``event: timeout``)."""
    started = last_sent = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        # Status first: once it is final, every line flushed before the completion is in the table.
        status = runs.status_of(run_id)
        while True:
            lines = runs.read_logs(run_id, after_seq=after_seq, limit=_STREAM_BATCH)
            for line in lines:
                after_seq = line.seq
                yield _sse("log", line.model_dump(mode="json"), after_seq)
            if lines:
                last_sent = time.monotonic()
            if len(lines) < _STREAM_BATCH:
                break
        if status.final:
            yield _sse("end", {"run_id": run_id, "status": status.value, "last_seq": after_seq})
            return
        now = time.monotonic()
        if now - started > STREAM_MAX_SECONDS:
            yield _sse("timeout", {"run_id": run_id, "status": status.value, "last_seq": after_seq})
            return
        if now - last_sent > STREAM_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = now
        time.sleep(STREAM_POLL_SECONDS)


@operation("GET", "/agents/{agent_id}/runs/{run_id}/report", summary="Read a run's report as a web page",
           tags=["runs"], media={"text/html": None})
def get_run_report(call: Call) -> flask.Response:
    """The run's human-readable report as one self-contained HTML page (no script, no external asset:
    it opens offline; light and dark): for the cost-anomaly agent the summary, the daily spend per
    service as a chart with each anomaly marked, the explanations and the recommendations with their
    estimated savings; for other agents the run's status and outputs. Readable by whoever may read
    the run (``get_run``'s access)."""
    run = call.services.runs.get(call.caller, call.params["agent_id"], call.params["run_id"])
    resp = flask.Response(render_report_page(run), status=200, mimetype="text/html")
    # Outputs are agent-written: the page may not run a script or fetch anything, whatever they hold.
    resp.headers["Content-Security-Policy"] = REPORT_CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
