"""Opaque cursors for list endpoints: base64url JSON of the last item's sort key."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.kernel.errors import BadRequest, ErrorCode

T = TypeVar("T")


class PageQuery(BaseModel):
    """``limit`` and ``cursor`` of every list endpoint."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)


class Page(BaseModel, Generic[T]):
    """One page of a list and the cursor of the next (None at the end)."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(key: dict[str, Any]) -> str:
    """Encode a sort key."""
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":"), default=str).encode()).decode()


def decode_cursor(cursor: str | None, *, required: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Decode a cursor made by ``encode_cursor``; a tampered one is a 400."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR) from exc
    if not isinstance(key, dict) or any(k not in key for k in required):
        raise BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR)
    return key
