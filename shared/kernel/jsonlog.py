"""Structured JSON logs with secret redaction (shared/kernel/redaction.py) on every record, whatever logged it.

Two formats (``configure_logging``'s ``fmt``, else ``MARKETPLACE_LOG_FORMAT``, else by the stream):
``json``, one object per line (what Cloud Logging and any collector parse), and ``human``, one short
readable line (what a person at a terminal reads: ``marketplace up`` on a terminal). JSON lines carry
Cloud Logging's special fields (docs/LOGGING.md): ``severity``, ``logging.googleapis.com/trace`` (and
``spanId``, ``trace_sampled``) from the current request's trace header (``set_request_trace``), and an
access line's ``httpRequest``, so Cloud Logging groups a request's lines and filters them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The one rule for secrets (shared/kernel/redaction.py), re-exported: the data plane imports
# only this module of the control plane's.
from shared.kernel.redaction import REDACTED, redact, redact_text

__all__ = ["REDACTED", "BatchingStreamHandler", "HumanFormatter", "JsonFormatter", "RedactedJson", "RequestTrace",
           "configure_logging", "parse_trace_headers", "redact", "redact_text", "reset_request_trace",
           "set_request_trace"]

#: Cloud Logging's severities for Python's levels (the names are its LogSeverity enum's).
_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=([01]))?$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True, slots=True)
class RedactedJson:
    """A field's value already serialized as JSON, every free text in it redacted one by one before
    serializing (an access line's ``httpRequest``). ``JsonFormatter`` puts it into the line after
    its own redaction pass over the rest, instead of running that pass over it again."""

    json: str


@dataclass(frozen=True, slots=True)
class RequestTrace:
    """The trace a request belongs to (W3C / Cloud Trace ids, lowercase hex)."""

    trace_id: str
    span_id: str | None = None
    sampled: bool | None = None


def parse_trace_headers(headers: Mapping[str, str]) -> RequestTrace | None:
    """The trace of a request from ``traceparent`` (W3C) or ``X-Cloud-Trace-Context``
    (``TRACE_ID/SPAN_ID;o=1``, the span id in decimal); None when neither is valid."""
    parent = (headers.get("traceparent") or "").strip().lower()
    match = _TRACEPARENT.match(parent)
    if match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16:
        return RequestTrace(match.group(1), match.group(2), bool(int(match.group(3), 16) & 1))
    cloud = (headers.get("X-Cloud-Trace-Context") or "").strip()
    match = _CLOUD_TRACE.match(cloud)
    if match and match.group(1) != "0" * 32:
        span = int(match.group(2)) if match.group(2) else 0
        return RequestTrace(match.group(1).lower(), f"{span:016x}" if 0 < span < 2**64 else None,
                            None if match.group(3) is None else match.group(3) == "1")
    return None


_current_trace: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar("marketplace_trace",
                                                                                     default=None)


def set_request_trace(trace: RequestTrace | None) -> contextvars.Token[RequestTrace | None]:
    """Make ``trace`` the trace of every line logged in this context (a request); returns the token
    to reset it with ``reset_request_trace``."""
    return _current_trace.set(trace)


def reset_request_trace(token: contextvars.Token[RequestTrace | None]) -> None:
    """Forget the request's trace (at the end of the request)."""
    _current_trace.reset(token)


def _trace_project() -> str | None:
    return os.environ.get("MARKETPLACE_GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT") or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed as ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace = _current_trace.get()
        if trace is not None:
            project = _trace_project()
            # Cloud Logging groups a request's lines by this field: the full resource name when the
            # project is known (gcp mode), the bare id otherwise.
            entry["logging.googleapis.com/trace"] = (f"projects/{project}/traces/{trace.trace_id}" if project
                                                     else trace.trace_id)
            if trace.span_id:
                entry["logging.googleapis.com/spanId"] = trace.span_id
            if trace.sampled is not None:
                entry["logging.googleapis.com/trace_sampled"] = trace.sampled
        ready: list[tuple[str, RedactedJson]] = []
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if isinstance(value, RedactedJson) and isinstance(key, str) and key not in entry:
                    ready.append((key, value))
                else:
                    entry[key] = value
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        # Secret-named keys first, then every credential shape in the serialized line at once.
        line = redact_text(json.dumps(redact(entry, text=False), default=str, ensure_ascii=False))
        if ready:  # redacted field by field already (their keys are ours, constant names)
            line = line[:-1] + "".join(f", {json.dumps(key)}: {value.json}" for key, value in ready) + "}"
        return line


class HumanFormatter(logging.Formatter):
    """One short line for a person: ``12:04:05 INFO  gateway: GET /orgs 201 (3.2 ms)``; a few extra
    fields as ``key=value``; redacted like the JSON lines."""

    _SKIP = frozenset({"httpRequest", "request_id", "operation", "principal", "status", "duration_ms"})

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        name = record.name.rsplit(".", 1)[-1]
        line = f"{when} {record.levelname:<7} {name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            if "duration_ms" in fields:
                line += f" ({fields['duration_ms']} ms)"
            extra = [f"{k}={v}" for k, v in redact(fields, text=False).items()
                     if k not in self._SKIP and v is not None and not isinstance(v, dict | list)]
            if extra:
                line += "  " + " ".join(extra[:8])
        if record.exc_info:
            line += "\n" + (record.exc_text or self.formatException(record.exc_info))
        return redact_text(line)


_TRACEBACKS = logging.Formatter()


def _redacting_factory(base: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A record factory that redacts a record's message and traceback when it is made, so that
    every handler (ours, a library's, pytest's ``caplog``) sees them redacted (a formatter uses a
    record's ``exc_text`` when it is set); extra fields are redacted by the formatter."""
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(_TRACEBACKS.formatException(record.exc_info))
        if isinstance(record.msg, str):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string is logging's to report, at emit
                return record
            redacted = redact_text(message)
            if record.args or redacted != message:
                record.msg, record.args = redacted, None
        return record
    make.marketplace_redacting = True  # type: ignore[attr-defined]
    return make


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _format_for(stream: Any, fmt: str | None) -> str:
    chosen = (fmt or os.environ.get("MARKETPLACE_LOG_FORMAT") or "auto").lower()
    if chosen in ("json", "human"):
        return chosen
    try:
        return "human" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


class BatchingStreamHandler(logging.StreamHandler[Any]):
    """A ``StreamHandler`` that writes lines in batches: at most ``interval`` seconds after they
    were logged, WARNING and above at once (with whatever waits before them), and whatever waits
    when the handler is flushed (``logging.shutdown`` at exit does). A busy gateway writes one
    batch where it would write a line per request, each write a system call that every request
    thread queues behind.

    A process forked from the one that made the handler (a worker, a sandboxed run) has no
    flushing thread: there it writes each line at once and leaves its parent's pending lines to
    the parent."""

    def __init__(self, stream: Any, interval: float = 0.05) -> None:
        super().__init__(stream)
        self.interval = interval
        self._pending: list[str] = []
        self._owner = os.getpid()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record) + self.terminator
            if os.getpid() != self._owner:
                self._pending = []  # the parent's, written by the parent
                self.stream.write(line)
                self.stream.flush()
                return
            self._pending.append(line)
            if record.levelno >= logging.WARNING:
                self._write_pending()
            elif len(self._pending) == 1:
                self._start_flusher()
                self._wake.set()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own rule: a failing handler reports, never raises
            self.handleError(record)

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, name="log-writer", daemon=True)
            self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self.interval)  # let the batch fill
            self.flush()

    def _write_pending(self) -> None:
        if self._pending:
            batch, self._pending = "".join(self._pending), []
            self.stream.write(batch)
        self.stream.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if os.getpid() != self._owner:
                self._pending = []
            if self.stream is not None and hasattr(self.stream, "flush"):
                self._write_pending()


def configure_logging(level: str = "INFO", stream: Any = None, fmt: str | None = None) -> None:
    """Route every logger through the redacting formatter — JSON, or one human line when ``fmt``
    (else ``MARKETPLACE_LOG_FORMAT``: json, human or auto) says so or, by default, when the stream is
    a terminal — and redact every record's message when it is made (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "marketplace_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(factory))
    root = logging.getLogger()
    out = stream or sys.stderr
    # Lines to a process's own stderr are written in batches unless a person reads them as they
    # come (a terminal); a stream passed in (a test's) gets each line at once.
    batched = stream is None and not _is_terminal(out)
    handler = BatchingStreamHandler(out) if batched else logging.StreamHandler(out)
    handler.setFormatter(HumanFormatter() if _format_for(out, fmt) == "human" else JsonFormatter())
    handler.set_name("marketplace-json")
    for old in root.handlers:
        if old.get_name() == "marketplace-json":
            old.flush()  # what a batching handler still holds
    root.handlers = [h for h in root.handlers if h.get_name() != "marketplace-json"] + [handler]
    root.setLevel(level.upper())
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # A client line per request: an idle worker's long polls would fill the terminal (the gateway logs
    # each request it serves itself).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Our lines carry neither thread nor process names: skip collecting them for every record
    # (the logging HOWTO's "Optimization" settings, the public ones).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
