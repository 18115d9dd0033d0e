"""Structured JSON logs with secret redaction (shared/kernel/redaction.py) on every record, whatever logged it."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# The one rule for secrets (shared/kernel/redaction.py), re-exported: the data plane imports
# only this module of the control plane's.
from shared.kernel.redaction import REDACTED, redact, redact_text

__all__ = ["REDACTED", "JsonFormatter", "configure_logging", "redact", "redact_text"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed as ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        # Secret-named keys first, then every credential shape in the serialized line at once.
        return redact_text(json.dumps(redact(entry, text=False), default=str, ensure_ascii=False))


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


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route every logger through the redacting JSON formatter, and redact every record's message
    when it is made (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "marketplace_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(factory))
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("marketplace-json")
    root.handlers = [h for h in root.handlers if h.get_name() != "marketplace-json"] + [handler]
    root.setLevel(level.upper())
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Our lines carry neither thread nor process names: skip collecting them for every record
    # (the logging HOWTO's "Optimization" settings, the public ones).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
