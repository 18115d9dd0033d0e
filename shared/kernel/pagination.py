"""Keyset pagination for every list endpoint: opaque cursors (base64url JSON of the last item's
sort key), the positions lists sort by (``Keyset``, newest first by ``(time, id)``, which most
lists use; ``ByKey``, ascending by one unique text key; ``BySeq``, newest first by a growing
integer), ``cursor_sort_value`` for a list sorted by several typed keys (the catalog search), and
``cut_page``/``next_page``, the one step that cuts a page from ``limit + 1`` rows and says whether
another follows."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
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


def _invalid() -> BadRequest:
    return BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR)


def _text(value: Any) -> str:
    """A text value of a cursor as a statement can take it: UTF-8 without NUL (what a JSON escape
    can smuggle in, a lone surrogate or ``\\u0000``, the driver refuses)."""
    if not isinstance(value, str) or "\x00" in value:
        raise _invalid()
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise _invalid() from exc
    return value


_INT_RANGE = {"integer": 2**31, "bigint": 2**63}


def cursor_sort_value(value: Any, sql_type: str) -> Any:
    """A sort-key value a cursor carries, checked against the SQL type its statement casts it to
    (``float8``, ``numeric`` as decimal text, ``integer``, ``bigint``, ``timestamptz`` as ISO 8601
    with an offset, ``text``): a value the cast would refuse is a 400, never a server error. None
    (a NULL sort key) passes."""
    if value is None:
        return None
    if sql_type == "text":
        return _text(value)
    if sql_type == "timestamptz":
        try:
            at = datetime.fromisoformat(_text(value))
        except (ValueError, OverflowError) as exc:
            raise _invalid() from exc
        if at.tzinfo is None:
            raise _invalid()
        try:
            return at.astimezone(UTC).isoformat()
        except OverflowError as exc:
            raise _invalid() from exc
    if isinstance(value, bool):
        raise _invalid()
    if sql_type in _INT_RANGE:
        if not isinstance(value, int) or not -_INT_RANGE[sql_type] <= value < _INT_RANGE[sql_type]:
            raise _invalid()
        return value
    if sql_type == "float8":
        if not isinstance(value, int | float) or not math.isfinite(value) or abs(value) > 1e300:
            raise _invalid()
        return float(value)
    if sql_type == "numeric":
        if not isinstance(value, str | int):
            raise _invalid()
        try:
            number = Decimal(_text(value) if isinstance(value, str) else value)
        except (InvalidOperation, ValueError) as exc:
            raise _invalid() from exc
        if not number.is_finite() or abs(number.adjusted()) > 100:
            raise _invalid()
        return str(number)
    raise ValueError(f"no cursor check for SQL type {sql_type!r}")  # a programming error


def encode_cursor(key: dict[str, Any]) -> str:
    """Encode a sort key (UTF-8 JSON, so a key with non-ASCII text stays short)."""
    text = json.dumps(key, separators=(",", ":"), default=str, ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_cursor(cursor: str | None, *, required: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Decode a cursor made by ``encode_cursor``; a tampered one is a 400."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:  # (nested too deep)
        raise _invalid() from exc
    if not isinstance(key, dict) or any(k not in key for k in required):
        raise _invalid()
    return key


def cut_page(rows: Sequence[T], limit: int) -> tuple[list[T], T | None]:
    """The first ``limit`` of ``rows`` (fetched with ``LIMIT limit + 1``) and the last of them when
    more rows follow, or None when this page is the last: a full last page announces nothing."""
    items = list(rows[:limit])
    return items, (items[-1] if len(rows) > limit and items else None)


def next_page(rows: Sequence[T], limit: int, key: Callable[[T], dict[str, Any]]) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``rows`` (fetched with ``LIMIT limit + 1``) and the cursor after the
    last of them, or None when nothing follows: the one keyset step of every list."""
    items, last = cut_page(rows, limit)
    return items, (None if last is None else encode_cursor(key(last)))


@dataclass(frozen=True)
class Keyset:
    """A newest-first position ``(created_at, id)``, the sort of most lists.

    A list's named query takes the position as three parameters (``params``) in this shape, which
    is true for every row when there is no cursor::

        AND (%s::timestamptz IS NULL OR (t.created_at, t.id) < (%s::timestamptz, %s::text))
        ORDER BY t.created_at DESC, t.id DESC LIMIT %s

    A list newest first by another time column uses it the same way (webhook attempts by
    ``(started_at, id)``: ``Keyset.of(row["started_at"], row["id"])``); the cursor calls the time
    ``created_at`` whichever column it is.
    """

    created_at: str | None = None
    id: str | None = None

    @classmethod
    def after(cls, cursor: str | None) -> Keyset:
        """The position a cursor names (the start for None); a tampered cursor is a 400."""
        key = decode_cursor(cursor, required=("created_at", "id"))
        if key is None:
            return cls()
        try:  # a time the database takes: ISO 8601 with an offset, as UTC
            at = datetime.fromisoformat(_text(key["created_at"]))
            if at.tzinfo is None:
                raise _invalid()
            created_at = at.astimezone(UTC).isoformat()
        except (ValueError, OverflowError) as exc:
            raise _invalid() from exc
        return cls(created_at, _text(key["id"]))

    @property
    def params(self) -> tuple[str | None, str | None, str | None]:
        """The three parameters of the shape above."""
        return self.created_at, self.created_at, self.id

    @staticmethod
    def of(created_at: datetime, item_id: str) -> dict[str, Any]:
        """The cursor key of an item, for ``next_page``."""
        return {"created_at": created_at.isoformat(), "id": item_id}


@dataclass(frozen=True)
class ByKey:
    """An ascending position by one unique text key, the sort of lists ordered by a natural key
    rather than by time (an org's cloud resources by resource id).

    A list's named query takes the position as two parameters (``params``) in this shape, which
    is true for every row when there is no cursor::

        AND (%s::text IS NULL OR t.key > %s) ORDER BY t.key LIMIT %s
    """

    key: str | None = None

    @classmethod
    def after(cls, cursor: str | None) -> ByKey:
        """The position a cursor names (the start for None); a tampered cursor is a 400."""
        key = decode_cursor(cursor, required=("key",))
        return cls() if key is None else cls(_text(key["key"]))

    @property
    def params(self) -> tuple[str | None, str | None]:
        """The two parameters of the shape above."""
        return self.key, self.key

    @staticmethod
    def of(key: str) -> dict[str, Any]:
        """The cursor key of an item, for ``next_page``."""
        return {"key": key}


@dataclass(frozen=True)
class BySeq:
    """A newest-first position by an integer sequence that only grows (the audit log's ``seq``).

    A list's named query takes the position as one parameter (``params``), NULL for the first
    page, e.g. ``AND seq < COALESCE(%s::bigint, 9223372036854775807) ORDER BY seq DESC LIMIT %s``.
    """

    seq: int | None = None

    @classmethod
    def after(cls, cursor: str | None) -> BySeq:
        """The position a cursor names (the start for None); a tampered cursor is a 400."""
        key = decode_cursor(cursor, required=("seq",))
        if key is None:
            return cls()
        seq = key["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
            raise _invalid()
        return cls(seq)

    @property
    def params(self) -> tuple[int | None]:
        """The one parameter of the shape above."""
        return (self.seq,)

    @staticmethod
    def of(seq: int) -> dict[str, Any]:
        """The cursor key of an item, for ``next_page``."""
        return {"seq": seq}
