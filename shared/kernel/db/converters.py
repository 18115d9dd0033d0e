"""Faster text-to-Python converters for pg8000's hottest result types.

pg8000 parses every ``timestamptz`` with ``datetime.strptime`` (~12 µs a value; a run row
holds several). ``datetime.fromisoformat`` reads PostgreSQL's ISO output (``2026-11-24
20:11:59.123456+00``) in well under a microsecond. Anything it cannot read (``infinity``,
BC dates, years past 9999) goes to pg8000's own converter, so results are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from pg8000 import converters

TIMESTAMP_OID = 1114
TIMESTAMPTZ_OID = 1184
DATE_OID = 1082


def _fast(parse: Callable[[str], Any], fallback: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(data: str) -> Any:
        try:
            return parse(data)
        except ValueError:
            return fallback(data)
    convert.__name__ = f"fast_{fallback.__name__}"
    return convert


timestamptz_in = _fast(datetime.fromisoformat, converters.timestamptz_in)
timestamp_in = _fast(datetime.fromisoformat, converters.timestamp_in)
date_in = _fast(date.fromisoformat, converters.date_in)


def install(conn: Any) -> None:
    """Register the fast converters on a pg8000 connection (other drivers are left alone)."""
    register = getattr(conn, "register_in_adapter", None)
    if register is None:
        return
    register(TIMESTAMPTZ_OID, timestamptz_in)
    register(TIMESTAMP_OID, timestamp_in)
    register(DATE_OID, date_in)
