"""Keyset pagination for every list endpoint: opaque cursors (base64url JSON of the last item's
sort key), the newest-first ``Keyset`` most lists use, and ``next_page``, the one step that cuts a
page and makes its cursor."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
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


def next_page(rows: Sequence[T], limit: int, key: Callable[[T], dict[str, Any]]) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``rows`` (fetched with ``LIMIT limit + 1``) and the cursor after the
    last of them, or None when nothing follows: the one keyset step of every list."""
    items = list(rows[:limit])
    return items, (encode_cursor(key(items[-1])) if len(rows) > limit and items else None)


@dataclass(frozen=True)
class Keyset:
    """A newest-first position ``(created_at, id)``, the sort of most lists.

    A list's named query takes the position as three parameters (``params``) in this shape, which
    is true for every row when there is no cursor::

        AND (%s::timestamptz IS NULL OR (t.created_at, t.id) < (%s::timestamptz, %s::text))
        ORDER BY t.created_at DESC, t.id DESC LIMIT %s
    """

    created_at: str | None = None
    id: str | None = None

    @classmethod
    def after(cls, cursor: str | None) -> Keyset:
        """The position a cursor names (the start for None); a tampered cursor is a 400."""
        key = decode_cursor(cursor, required=("created_at", "id"))
        if key is None:
            return cls()
        if not isinstance(key["created_at"], str) or not isinstance(key["id"], str):
            raise BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR)
        return cls(key["created_at"], key["id"])

    @property
    def params(self) -> tuple[str | None, str | None, str | None]:
        """The three parameters of the shape above."""
        return self.created_at, self.created_at, self.id

    @staticmethod
    def of(created_at: datetime, item_id: str) -> dict[str, Any]:
        """The cursor key of an item, for ``next_page``."""
        return {"created_at": created_at.isoformat(), "id": item_id}
