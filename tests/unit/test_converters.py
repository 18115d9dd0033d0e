"""The fast timestamp converters agree with pg8000's own on everything PostgreSQL prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from pg8000 import converters as reference

from shared.kernel.db.converters import date_in, timestamp_in, timestamptz_in


def _pg_offset(offset: timedelta) -> str:
    # PostgreSQL prints +HH, +HH:MM or +HH:MM:SS, whichever is the shortest exact form.
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}"
    if minutes or seconds:
        text += f":{minutes:02d}"
    if seconds:
        text += f":{seconds:02d}"
    return text


def _pg_text(value: datetime) -> str:
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value:%H:%M:%S}"
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text


offsets = st.integers(min_value=-15 * 60, max_value=15 * 60).map(lambda m: timedelta(minutes=m))


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), offsets)
def test_timestamptz_matches_pg8000(value, offset):
    text = _pg_text(value) + _pg_offset(offset)
    fast = timestamptz_in(text)
    assert fast == reference.timestamptz_in(text)
    assert fast.utcoffset() == offset and fast.replace(tzinfo=None) == value


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_timestamp_and_date_match_pg8000(value):
    text = _pg_text(value)
    assert timestamp_in(text) == reference.timestamp_in(text) == value
    day = value.date().isoformat()
    assert date_in(day) == reference.date_in(day) == value.date()


def test_what_isoformat_cannot_read_falls_back():
    for text in ("infinity", "-infinity", "2000-01-01 00:00:00+00 BC"):
        assert timestamptz_in(text) == reference.timestamptz_in(text)
    assert date_in("infinity") == "infinity"


def test_the_database_round_trip_uses_them(container):
    with container.db.read() as tx:
        row = tx.fetch_one("SELECT '2026-11-24 20:11:59.5+00'::timestamptz AS t, 'infinity'::timestamptz AS i, "
                           "'2026-02-03'::date AS d")
    assert row == {"t": datetime(2026, 11, 24, 20, 11, 59, 500000, tzinfo=UTC), "i": "infinity",
                   "d": datetime(2026, 2, 3).date()}
