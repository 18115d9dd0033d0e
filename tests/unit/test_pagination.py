"""The kernel's keyset pagination: a page is cut from ``limit + 1`` rows (a full last page announces
no next page), paging through a list returns each item once, and a cursor that the API did not
issue is a 400 ``invalid_cursor`` before any statement runs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.kernel.errors import BadRequest, ErrorCode
from shared.kernel.pagination import (
    ByKey,
    BySeq,
    Keyset,
    cursor_sort_value,
    cut_page,
    decode_cursor,
    encode_cursor,
    next_page,
)


def _raw(value: Any) -> str:
    """A cursor made by hand, as a client tampering with one would."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _refused(make: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        make()
    assert caught.value.code == ErrorCode.INVALID_CURSOR and caught.value.status == 400


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_a_full_last_page_announces_no_next_page(limit):
    rows = list(range(limit))  # exactly a page: the LIMIT limit + 1 query found no more
    assert cut_page(rows, limit) == (rows, None)
    assert next_page(rows, limit, lambda r: {"n": r}) == (rows, None)
    more = list(range(limit + 1))
    assert cut_page(more, limit) == (more[:limit], limit - 1)
    items, cursor = next_page(more, limit, lambda r: {"n": r})
    assert items == more[:limit] and decode_cursor(cursor) == {"n": limit - 1}
    assert cut_page([], limit) == ([], None) and next_page([], limit, lambda r: {"n": r}) == ([], None)


def _newest_first(rows: list[tuple[datetime, str]], after: Keyset, limit: int) -> list[tuple[datetime, str]]:
    """What the Keyset's SQL shape answers, over a list in memory."""
    ordered = sorted(rows, reverse=True)
    if after.created_at is not None:
        at = datetime.fromisoformat(after.created_at)
        ordered = [r for r in ordered if r < (at, after.id or "")]
    return ordered[:limit + 1]


def _by_key(keys: list[str], after: ByKey, limit: int) -> list[str]:
    """What the ByKey SQL shape answers, over a list in memory."""
    return [k for k in sorted(keys) if after.key is None or k > after.key][:limit + 1]


@given(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=3))
def test_paging_newest_first_returns_each_item_once(limit, extra):
    base = datetime(2024, 1, 1, tzinfo=UTC)
    # N·limit + extra items, some sharing a time (the id breaks the tie).
    rows = [(base + timedelta(seconds=i // 2), f"x_{i:03d}") for i in range(limit * 2 + extra)]
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = next_page(_newest_first(rows, Keyset.after(cursor), limit), limit,
                                 lambda r: Keyset.of(r[0], r[1]))
        seen += page
        pages += 1
        if cursor is None:
            break
    assert seen == sorted(rows, reverse=True)
    assert pages == max(1, -(-len(rows) // limit))  # no empty page after a full last one


@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s and s.isprintable()),
                unique=True, max_size=12), st.integers(min_value=1, max_value=5))
def test_paging_by_key_returns_each_item_once(keys, limit):
    seen, cursor = [], None
    while True:
        page, cursor = next_page(_by_key(keys, ByKey.after(cursor), limit), limit, ByKey.of)
        seen += page
        if cursor is None:
            break
    assert seen == sorted(keys)


def test_n_plus_one_items_in_pages_of_n():
    keys = [f"i-{n}" for n in range(4)]
    first, cursor = next_page(_by_key(keys, ByKey.after(None), 3), 3, ByKey.of)
    assert first == keys[:3] and cursor
    second, end = next_page(_by_key(keys, ByKey.after(cursor), 3), 3, ByKey.of)
    assert second == keys[3:] and end is None


def test_keyset_reads_the_time_as_utc():
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert Keyset.after(encode_cursor(Keyset.of(at, "a"))).params == (at.isoformat(), at.isoformat(), "a")
    shifted = Keyset.after(_raw({"created_at": "2024-05-01T14:00:00+02:00", "id": "a"}))
    assert shifted.created_at == at.isoformat()
    assert Keyset.after(None).params == (None, None, None) and ByKey.after(None).params == (None, None)


def test_a_long_non_ascii_key_round_trips():
    key = "\u0434\u0438\u0441\u043a/" + "\u00e9" * 400 + "/\U0001f600"
    cursor = encode_cursor(ByKey.of(key))
    assert ByKey.after(cursor).key == key and len(cursor) <= 4096


@pytest.mark.parametrize("cursor", [
    "!!!", "garbage!", _raw([1, 2]), _raw("x"), _raw({}), _raw({"created_at": "2024-01-01T00:00:00+00:00"}),
    _raw({"created_at": 5, "id": "a"}), _raw({"created_at": "2024-01-01T00:00:00+00:00", "id": 5}),
    _raw({"created_at": "yesterday", "id": "a"}), _raw({"created_at": "2024-01-01T00:00:00", "id": "a"}),
    _raw({"created_at": "2024-13-01T00:00:00+00:00", "id": "a"}),
    _raw({"created_at": "0001-01-01T00:00:00+05:00", "id": "a"}),
    _raw({"created_at": "2024-01-01T00:00:00+00:00", "id": "a\x00b"}),
    _raw({"created_at": "2024-01-01T00:00:00+00:00", "id": "\ud800"}),
    _raw({"created_at": "2024-01-01T00:00:00+00:00\x00", "id": "a"}),
    base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode(),
])
def test_a_tampered_keyset_cursor_is_invalid(cursor):
    _refused(lambda: Keyset.after(cursor))


@pytest.mark.parametrize("cursor", [
    "!!!", _raw({"id": "x"}), _raw({"key": 5}), _raw({"key": None}), _raw({"key": ["a"]}), _raw({"key": "a\x00"}),
    _raw({"key": "\udfff"}), base64.urlsafe_b64encode(b"{" * 10).decode(),
])
def test_a_tampered_by_key_cursor_is_invalid(cursor):
    _refused(lambda: ByKey.after(cursor))


@pytest.mark.parametrize("cursor", [
    "!!!", _raw({"id": "x"}), _raw({"seq": "5"}), _raw({"seq": True}), _raw({"seq": 1.5}), _raw({"seq": 0}),
    _raw({"seq": -3}), _raw({"seq": 2**63}), _raw({"seq": None}),
])
def test_a_tampered_seq_cursor_is_invalid(cursor):
    _refused(lambda: BySeq.after(cursor))


@given(st.lists(st.integers(1, 10**6), unique=True, max_size=40), st.integers(1, 7))
def test_paging_by_seq_returns_each_item_once(seqs, limit):
    ordered = sorted(seqs, reverse=True)
    seen, cursor = [], None
    while True:
        below = BySeq.after(cursor).params[0]
        rows = [s for s in ordered if below is None or s < below][:limit + 1]
        page, cursor = next_page(rows, limit, BySeq.of)
        seen += page
        if cursor is None:
            break
    assert seen == ordered


@pytest.mark.parametrize(("value", "sql_type"), [
    ("x", "float8"), (float("inf"), "float8"), (True, "float8"), (2**31, "integer"), (1.0, "bigint"),
    ("1", "bigint"), ("many", "numeric"), ("NaN", "numeric"), (1.5, "numeric"), ("1e999", "numeric"),
    ("yesterday", "timestamptz"), ("2026-01-01T00:00:00", "timestamptz"), (5, "timestamptz"),
    ("a\x00", "text"), (3, "text"),
])
def test_a_forged_sort_value_is_invalid(value, sql_type):
    _refused(lambda: cursor_sort_value(value, sql_type))


@pytest.mark.parametrize(("value", "sql_type", "expected"), [
    (0.25, "float8", 0.25), (3, "float8", 3.0), (2**62, "bigint", 2**62), ("4.50", "numeric", "4.50"),
    ("2026-01-01T01:00:00+01:00", "timestamptz", "2026-01-01T00:00:00+00:00"), ("agt_1", "text", "agt_1"),
    (None, "bigint", None),
])
def test_a_sort_value_the_statement_takes_passes(value, sql_type, expected):
    assert cursor_sort_value(value, sql_type) == expected
