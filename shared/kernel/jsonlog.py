"""Structured JSON logs with secret redaction on every record, whatever logged it."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

REDACTED = "[REDACTED]"

# Credentials the platform issues, JWTs, bearer headers and private keys, wherever they appear in
# text. Each shape comes with the literals (lower-cased) that any match of it contains: text that
# holds none of them cannot hold that credential, so most log lines skip the regular expression.
_SHAPES: list[tuple[tuple[str, ...], str]] = [
    (("mk.", "rt."), r"\b(?:mk|rt)\.[A-Za-z0-9_]+\.[A-Za-z0-9_\-]{16,}"),
    (("eyj",), r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"),
    (("bearer",), r"\b(?i:bearer)\s+[A-Za-z0-9._\-~+/]+=*"),
    (("whsec_",), r"\bwhsec_[A-Za-z0-9+/=_\-]+"),
    (("sk_test_", "sk_live_"), r"\bsk_(?:test|live)_[A-Za-z0-9]+"),
    (("private key-----",), r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
]
_ANY_PATTERN = re.compile("|".join(f"(?:{pattern})" for _, pattern in _SHAPES))
_TRIGGERS = tuple(literal for literals, _ in _SHAPES for literal in literals)
_SECRET_KEYS = re.compile(r"(?i)(secret|password|passwd|token|authorization|api[_-]?key|private[_-]?key|"
                          r"credential|signature|cookie)")


def redact_text(text: str) -> str:
    """Replace every credential-shaped substring."""
    lowered = text.lower()
    if not any(t in lowered for t in _TRIGGERS):
        return text
    return _ANY_PATTERN.sub(REDACTED, text)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def redact(value: Any, *, key: str | None = None, text: bool = True) -> Any:
    """Redact a structure: values under secret-named keys entirely, credential shapes in any
    string (unless ``text`` is False: the caller redacts the serialized text as a whole)."""
    if key is not None and _secret_key(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value) if text else value
    if isinstance(value, dict):
        return {k: redact(v, key=str(k), text=text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, text=text) for v in value]
    return value


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
            entry["exception"] = self.formatException(record.exc_info)
        # Secret-named keys first, then every credential shape in the serialized line at once.
        return redact_text(json.dumps(redact(entry, text=False), default=str, ensure_ascii=False))


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route every logger through the redacting JSON formatter (idempotent)."""
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
