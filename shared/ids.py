"""Identifiers: a type prefix, then a time-ordered, random, URL-safe body."""

from __future__ import annotations

import base64
import secrets
import time

_ALPHABET_TRANS = str.maketrans("", "", "=")


def new_id(prefix: str) -> str:
    """``prefix_`` + 48-bit milliseconds + 80 random bits, base32 lowercase (26 chars)."""
    raw = int(time.time() * 1000).to_bytes(6, "big") + secrets.token_bytes(10)
    return f"{prefix}_{base64.b32encode(raw).decode().lower().translate(_ALPHABET_TRANS)}"


def new_secret(nbytes: int = 32) -> str:
    """A 256-bit (by default) URL-safe random secret."""
    return secrets.token_urlsafe(nbytes)


def id_time(value: str) -> float | None:
    """When an id from ``new_id`` was made (epoch seconds), or None if it is not one of ours."""
    _prefix, sep, body = value.rpartition("_")
    if not sep or len(body) != 26:
        return None
    try:
        raw = base64.b32decode(body.upper() + "======")
    except (ValueError, TypeError):
        return None
    return int.from_bytes(raw[:6], "big") / 1000
