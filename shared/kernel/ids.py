"""Identifiers: a type prefix, then a URL-safe body holding the time it was made and random bits.

The body is RFC 4648 base32, whose alphabet does not sort as text ("2" < "a"): compare ids by
``id_time``, not as strings.
"""

from __future__ import annotations

import base64
import secrets
import time

# Base32 (RFC 4648, lowercase, unpadded) two characters at a time: 16 bytes are 128 bits, which
# base32 spells as 26 characters (the last two bits zero), i.e. 13 groups of 10 bits.
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = range(120, -1, -10)


def base32_128(value: int) -> str:
    """A 128-bit number as base32 of its 16 big-endian bytes, lowercase and unpadded (26 chars);
    what ``base64.b32encode`` spells, a few times faster."""
    value <<= 2
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str) -> str:
    """``prefix_`` + 48-bit milliseconds + 80 random bits, base32 lowercase (26 chars)."""
    millis = int(time.time() * 1000) & 0xFFFF_FFFF_FFFF
    return prefix + "_" + base32_128(millis << 80 | int.from_bytes(secrets.token_bytes(10), "big"))


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
