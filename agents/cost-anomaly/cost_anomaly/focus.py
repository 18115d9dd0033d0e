"""FOCUS 1.0 billing data: a streaming CSV reader and the daily roll-up the agent analyses.

The FinOps Open Cost and Usage Specification (FOCUS) is the provider-neutral billing export format
that AWS, Microsoft and Oracle all emit. A FOCUS file is large (one row per resource, SKU and hour),
so the reader streams: it holds one CSV row at a time and yields a typed, normalized
``FocusRecord`` per row. The analysis never needs hourly grain, so ``rollup_daily`` folds records
into a ``DailyCostTable`` (one line per resource/pricing combination, one point per day) whose size
depends on the number of resources and days, not on the number of rows.

Shapes seen in real exports (see ``data/README.md``): ``NULL`` literals and empty strings both mean
"no value"; ``Tags`` is a JSON object serialized into one field; timestamps are
``YYYY-MM-DD HH:MM:SS`` (UTC) or ISO 8601 with an offset.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Literal

#: The 1,000-row FOCUS 1.0 sample (FinOps Foundation, CC BY 4.0) shipped with the agent.
SAMPLE_CSV = Path(__file__).parent / "data" / "focus_sample.csv"
#: The demo export derived from it (tests/demo_sample.py): what a run reads when no billing source is
#: configured. Its injected anomalies are documented in ``DEMO_ANOMALIES``.
DEMO_CSV = Path(__file__).parent / "data" / "demo_focus.csv"
DEMO_ANOMALIES = Path(__file__).parent / "data" / "demo_anomalies.json"

#: Columns without which a file cannot be analysed; every other column is optional.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "BilledCost",
    "BillingAccountId",
    "ChargeCategory",
    "ChargePeriodStart",
    "EffectiveCost",
    "ProviderName",
    "ServiceName",
)

#: Download cap for http(s) sources: a billing export larger than this is a misconfiguration.
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 60.0

#: Cell values that mean "no value": the FOCUS NULL literal and (in Oracle exports) the empty string.
_MISSING = frozenset({"", "NULL"})

# Parsed-value caches are bounded so memory stays constant however long the file is; the values
# they cache (hour timestamps, tag sets) repeat heavily, so a small cache hits almost always.
_CACHE_LIMIT = 50_000

CostMetric = Literal["billed_cost", "effective_cost"]
COST_METRICS: tuple[CostMetric, ...] = ("billed_cost", "effective_cost")


class FocusFormatError(ValueError):
    """The file is not readable as FOCUS 1.0; ``row`` counts the header as row 1."""

    def __init__(self, message: str, *, row: int, column: str | None = None) -> None:
        self.row = row
        self.column = column
        where = f"row {row}" if column is None else f"row {row}, column {column}"
        super().__init__(f"FOCUS format error at {where}: {message}")


class FocusSourceError(ValueError):
    """The billing source cannot be opened: unsupported scheme, unreachable, or over the size cap."""


@dataclass(frozen=True, slots=True)
class FocusRecord:
    """One FOCUS row, reduced to the columns the agent uses and normalized.

    Missing values (``NULL`` or empty) are ``None``; ``day`` is the UTC date of
    ``ChargePeriodStart``; ``region`` is ``RegionId`` falling back to ``RegionName`` (Oracle
    exports only fill the latter).
    """

    day: date
    provider: str
    billing_account: str
    sub_account: str | None
    sub_account_name: str | None
    service: str
    service_category: str | None
    region: str | None
    resource_id: str | None
    resource_type: str | None
    charge_category: str
    pricing_category: str | None
    commitment_discount_id: str | None
    billed_cost: float
    effective_cost: float
    currency: str | None
    consumed_quantity: float | None
    unit: str | None
    tags: dict[str, str] | None

    def cost(self, metric: CostMetric) -> float:
        """The row's cost in the chosen metric (billed or amortized/effective)."""
        return self.billed_cost if metric == "billed_cost" else self.effective_cost

    def to_dict(self) -> dict[str, object]:
        """A JSON-compatible dict (``day`` as an ISO date) that ``from_dict`` reverses."""
        return {name: _json_value(getattr(self, name)) for name in RECORD_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FocusRecord:
        """Rebuild a record from ``to_dict`` output (e.g. a tool result that crossed a process)."""
        try:
            return _record_from_values(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a FOCUS record dict: {exc}") from exc


RECORD_FIELDS: tuple[str, ...] = tuple(FocusRecord.__dataclass_fields__)


def format_money(amount: float, currency: str | None = "USD", *, digits: int = 2) -> str:
    """``$1,234.50`` for US dollars (and unknown currencies), ``1,234.50 EUR`` otherwise."""
    sign = "-" if amount < 0 else ""
    number = f"{abs(amount):,.{digits}f}"
    if currency is None or currency == "USD":
        return f"{sign}${number}"
    return f"{sign}{number} {currency}"


# --------------------------------------------------------------------------------------------
# Reading


def iter_focus(
    source: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Iterator[FocusRecord]:
    """Stream ``FocusRecord``s from a FOCUS 1.0 CSV.

    ``source`` is a local path, a ``file://`` URL or an ``http(s)://`` URL (downloaded with
    ``timeout`` seconds per socket operation and at most ``max_bytes`` bytes). Raises
    ``FocusFormatError`` (with the row number) for a missing required column, a ragged row or an
    unparseable value, and ``FocusSourceError`` when the source cannot be opened.
    """
    with open_source(source, max_bytes=max_bytes, timeout=timeout) as stream:
        yield from parse_focus(stream)


def read_focus_file(
    source: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[FocusRecord]:
    """All records of ``source`` as a list (see ``iter_focus``)."""
    return list(iter_focus(source, max_bytes=max_bytes, timeout=timeout))


def parse_focus(stream: Iterable[str]) -> Iterator[FocusRecord]:
    """Parse FOCUS CSV text (an open text stream or any iterable of lines), one row at a time."""
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise FocusFormatError("the file is empty (no header row)", row=1) from None
    except csv.Error as exc:
        raise FocusFormatError(f"unreadable CSV: {exc}", row=1) from exc
    parser = _RowParser(header)
    row_number = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise FocusFormatError(f"unreadable CSV: {exc}", row=row_number + 1) from exc
        row_number += 1
        if not row:  # a blank line between records carries no data
            continue
        yield parser.parse(row, row_number)


@contextmanager
def open_source(
    source: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Iterator[IO[str]]:
    """Open a billing source as text (UTF-8, a byte-order mark tolerated, CSV newline handling)."""
    text = os.fspath(source)
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        with _open_http(text, max_bytes=max_bytes, timeout=timeout) as stream:
            yield stream
        return
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FocusSourceError(f"file:// URLs must name a local file, got host {parts.netloc!r}")
        path = urllib.request.url2pathname(parts.path)
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # "C:\..." parses as scheme "c"
        path = text
    else:
        raise FocusSourceError(f"unsupported billing source scheme {scheme!r} (use a path, file:// or https://)")
    with open(path, encoding="utf-8-sig", newline="") as stream:
        yield stream


def shown_url(url: str) -> str:
    """``url`` as an error may quote it: where it points (scheme, host, port, path), without its
    user-info, query or fragment, where signed exports carry their credentials
    (``X-Amz-Signature``, ``sig``, ``token``). The platform masks them too; an agent says only
    what it must."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@contextmanager
def _open_http(url: str, *, max_bytes: int, timeout: float) -> Iterator[IO[str]]:
    request = urllib.request.Request(url, headers={"Accept": "text/csv, */*"})  # noqa: S310 - scheme checked
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked
    except urllib.error.URLError as exc:
        raise FocusSourceError(f"cannot fetch billing data from {shown_url(url)}: {exc}") from exc
    with response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise FocusSourceError(f"{shown_url(url)} is {int(declared)} bytes, over the {max_bytes}-byte limit")
        capped = io.BufferedReader(_CappedStream(response, max_bytes, shown_url(url)))
        yield io.TextIOWrapper(capped, encoding="utf-8-sig", newline="")


class _CappedStream(io.RawIOBase):
    """A raw stream that fails once more than ``limit`` bytes were read (servers may omit or lie
    about Content-Length, so the cap is enforced on the bytes actually received)."""

    def __init__(self, inner: IO[bytes], limit: int, name: str) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._name = name
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data)
        self._count += n
        if self._count > self._limit:
            raise FocusSourceError(f"{self._name} exceeds the {self._limit}-byte limit")
        buffer[:n] = data
        return n


class _RowParser:
    """Turns one CSV row into a ``FocusRecord`` using column positions found in the header.

    This is the per-row hot path of a 100,000-row file, so it looks values up by precomputed
    position in one pass instead of calling a helper per column.
    """

    # Text fields of FocusRecord in constructor order, with the FOCUS column each comes from.
    _TEXT_COLUMNS = (
        "ProviderName", "BillingAccountId", "SubAccountId", "SubAccountName", "ServiceName",
        "ServiceCategory", "RegionId", "RegionName", "ResourceId", "ResourceType", "ChargeCategory",
        "PricingCategory", "CommitmentDiscountId", "ConsumedUnit", "BillingCurrency",
    )
    _REQUIRED_TEXT = frozenset({"ProviderName", "BillingAccountId", "ChargeCategory"})

    def __init__(self, header: Sequence[str]) -> None:
        names = [name.strip() for name in header]
        self.width = len(names)
        index = {name: i for i, name in enumerate(names)}
        missing = [name for name in REQUIRED_COLUMNS if name not in index]
        if missing:
            raise FocusFormatError(
                f"missing required column(s) {', '.join(missing)}; is this a FOCUS 1.0 export?", row=1
            )
        # An optional column the file lacks reads position `width`: the empty cell appended to rows.
        self._text_positions = [index.get(name, self.width) for name in self._TEXT_COLUMNS]
        self._billed = index["BilledCost"]
        self._effective = index["EffectiveCost"]
        self._quantity = index.get("ConsumedQuantity", self.width)
        self._start = index["ChargePeriodStart"]
        self._tags_at = index.get("Tags", self.width)
        self._days: dict[str, date] = {}
        self._tags: dict[str, dict[str, str]] = {}

    def parse(self, row: list[str], n: int) -> FocusRecord:
        if len(row) != self.width:
            raise FocusFormatError(f"expected {self.width} fields, found {len(row)}", row=n)
        row.append("")  # the csv module hands over a fresh list per row, so extending it is safe
        intern = sys.intern
        texts = [None if (value := row[i]) in _MISSING else intern(value) for i in self._text_positions]
        (provider, account, sub_account, sub_account_name, service, category, region_id, region_name,
         resource_id, resource_type, charge_category, pricing_category, commitment, unit, currency) = texts
        if provider is None or account is None or charge_category is None:
            for column, text in zip(self._TEXT_COLUMNS, texts, strict=True):
                if column in self._REQUIRED_TEXT and text is None:
                    raise FocusFormatError("value is required but NULL or empty", row=n, column=column)
        assert provider is not None
        assert account is not None
        assert charge_category is not None
        # Positional arguments, in FocusRecord's field order (keywords cost measurably per row).
        return FocusRecord(
            self._day(row[self._start], n),
            provider,
            account,
            sub_account,
            sub_account_name,
            # ServiceName may be null on a few provider-level charges (e.g. support fees); they still
            # belong in totals, so they get a visible placeholder instead of failing the file.
            service or "(no service)",
            category,
            region_id or region_name,  # Oracle exports fill only RegionName
            resource_id,
            resource_type,
            charge_category,
            pricing_category,
            commitment,
            _required_number(row[self._billed], "BilledCost", n),
            _required_number(row[self._effective], "EffectiveCost", n),
            currency,
            _number(row[self._quantity], "ConsumedQuantity", n),
            unit,
            self._tags_of(row[self._tags_at], n),
        )

    def _day(self, value: str, n: int) -> date:
        cached = self._days.get(value)
        if cached is not None:
            return cached
        if value in _MISSING:
            raise FocusFormatError("value is required but NULL or empty", row=n, column="ChargePeriodStart")
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise FocusFormatError(
                f"{value!r} is not an ISO 8601 timestamp", row=n, column="ChargePeriodStart"
            ) from None
        # FOCUS timestamps are UTC; an explicit offset is honoured, a naive value is taken as UTC.
        day = stamp.astimezone(UTC).date() if stamp.tzinfo is not None else stamp.date()
        if len(self._days) >= _CACHE_LIMIT:
            self._days.clear()
        self._days[value] = day
        return day

    def _tags_of(self, value: str, n: int) -> dict[str, str] | None:
        if value in _MISSING:
            return None
        cached = self._tags.get(value)
        if cached is None:
            cached = _parse_tags(value, n)
            if len(self._tags) >= _CACHE_LIMIT:
                self._tags.clear()
            self._tags[value] = cached
        # A copy per record: records are immutable values and must not share a mutable dict.
        return dict(cached)


def _number(value: str, column: str, n: int) -> float | None:
    if value in _MISSING:
        return None
    try:
        number = float(value)
    except ValueError:
        raise FocusFormatError(f"{value!r} is not a number", row=n, column=column) from None
    if not math.isfinite(number):
        raise FocusFormatError(f"{value!r} is not a finite number", row=n, column=column)
    return number


def _required_number(value: str, column: str, n: int) -> float:
    number = _number(value, column, n)
    if number is None:
        raise FocusFormatError("value is required but NULL or empty", row=n, column=column)
    return number


def _parse_tags(value: str, n: int) -> dict[str, str]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise FocusFormatError(f"Tags is not valid JSON ({exc.msg})", row=n, column="Tags") from None
    if not isinstance(parsed, dict):
        raise FocusFormatError("Tags must be a JSON object", row=n, column="Tags")
    # FOCUS tag values are strings; providers occasionally emit numbers or booleans, which are kept
    # in their JSON spelling so that "true" and True do not become two different tag values.
    return {
        sys.intern(str(key)): item if isinstance(item, str) else json.dumps(item)
        for key, item in parsed.items()
    }


# --------------------------------------------------------------------------------------------
# Record serialization (graph state must be JSON)


def _json_value(value: object) -> object:
    if isinstance(value, date):
        return value.isoformat()
    return value


def _record_from_values(data: Mapping[str, object]) -> FocusRecord:
    day = data["day"]
    tags = data["tags"]
    return FocusRecord(
        day=day if isinstance(day, date) else date.fromisoformat(_as_str(day)),
        provider=_as_str(data["provider"]),
        billing_account=_as_str(data["billing_account"]),
        sub_account=_as_opt_str(data["sub_account"]),
        sub_account_name=_as_opt_str(data["sub_account_name"]),
        service=_as_str(data["service"]),
        service_category=_as_opt_str(data["service_category"]),
        region=_as_opt_str(data["region"]),
        resource_id=_as_opt_str(data["resource_id"]),
        resource_type=_as_opt_str(data["resource_type"]),
        charge_category=_as_str(data["charge_category"]),
        pricing_category=_as_opt_str(data["pricing_category"]),
        commitment_discount_id=_as_opt_str(data["commitment_discount_id"]),
        billed_cost=_as_float(data["billed_cost"]),
        effective_cost=_as_float(data["effective_cost"]),
        currency=_as_opt_str(data["currency"]),
        consumed_quantity=None if data["consumed_quantity"] is None else _as_float(data["consumed_quantity"]),
        unit=_as_opt_str(data["unit"]),
        tags=None if tags is None else _as_tags(tags),
    )


def records_to_columns(records: Iterable[FocusRecord]) -> dict[str, list[object]]:
    """A compact, JSON-compatible columnar form: one list per field, days as ISO strings.

    Columns (rather than one dict per row) cost a pointer per value: the strings are interned and
    shared, so 100,000 records stay in the tens of megabytes.
    """
    columns: dict[str, list[object]] = {name: [] for name in RECORD_FIELDS}
    appenders = [(name, columns[name].append) for name in RECORD_FIELDS]
    iso: dict[date, str] = {}
    for record in records:
        for name, append in appenders:
            value = getattr(record, name)
            if name == "day":
                value = iso.get(record.day) or iso.setdefault(record.day, record.day.isoformat())
            append(value)
    return columns


# What each record field may hold in the columnar form (checked column by column, which is much
# cheaper than validating every record separately).
_COLUMN_TYPES: dict[str, tuple[type, ...]] = {
    "day": (str,),
    "provider": (str,),
    "billing_account": (str,),
    "sub_account": (str, type(None)),
    "sub_account_name": (str, type(None)),
    "service": (str,),
    "service_category": (str, type(None)),
    "region": (str, type(None)),
    "resource_id": (str, type(None)),
    "resource_type": (str, type(None)),
    "charge_category": (str,),
    "pricing_category": (str, type(None)),
    "commitment_discount_id": (str, type(None)),
    "billed_cost": (float, int),
    "effective_cost": (float, int),
    "currency": (str, type(None)),
    "consumed_quantity": (float, int, type(None)),
    "unit": (str, type(None)),
    "tags": (dict, type(None)),
}


def records_from_columns(columns: Mapping[str, Sequence[object]]) -> Iterator[FocusRecord]:
    """Yield the records of a ``records_to_columns`` mapping, validating its shape first."""
    missing = [name for name in RECORD_FIELDS if name not in columns]
    if missing:
        raise ValueError(f"columnar records lack field(s) {', '.join(missing)}")
    if len({len(columns[name]) for name in RECORD_FIELDS}) > 1:
        raise ValueError("columnar records have columns of different lengths")
    for name in RECORD_FIELDS:
        allowed = _COLUMN_TYPES[name]
        if not all(isinstance(value, allowed) and not isinstance(value, bool) for value in columns[name]):
            raise ValueError(f"columnar records: column {name!r} holds a value of the wrong type")
    days: dict[object, date] = {}
    for values in zip(*(columns[name] for name in RECORD_FIELDS), strict=True):
        raw_day = values[0]
        day = days.get(raw_day)
        if day is None:
            try:
                day = days.setdefault(raw_day, date.fromisoformat(_as_str(raw_day)))
            except ValueError as exc:
                raise ValueError(f"columnar records: bad day {raw_day!r}") from exc
        yield FocusRecord(day, *values[1:])  # the column types were checked above


def coerce_records(result: object) -> Iterator[FocusRecord]:
    """Accept what a ``billing.read_focus`` call may return: records, record dicts, or columns.

    In-process the tool returns ``FocusRecord`` objects; a registry that runs tools out of process
    returns their JSON form instead, so the graph accepts both.
    """
    if isinstance(result, Mapping):
        yield from records_from_columns(result)
        return
    if not isinstance(result, Iterable) or isinstance(result, str | bytes):
        raise TypeError(f"billing.read_focus returned {type(result).__name__}, expected records")
    for item in result:
        if isinstance(item, FocusRecord):
            yield item
        elif isinstance(item, Mapping):
            yield FocusRecord.from_dict(item)
        else:
            raise TypeError(f"billing.read_focus returned a {type(item).__name__} item, expected a record")


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _as_opt_str(value: object) -> str | None:
    return None if value is None else _as_str(value)


def _as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _as_tags(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a tags object, got {type(value).__name__}")
    return {_as_str(key): _as_str(item) for key, item in value.items()}


# --------------------------------------------------------------------------------------------
# Daily roll-up

#: Charge categories that measure consumption. Credits, adjustments and taxes are real money but
#: are booked on their own schedule, so they count in totals and are kept out of the usage series.
USAGE_CHARGE_CATEGORIES = frozenset({"Usage", "Purchase"})


@dataclass(frozen=True, slots=True)
class CostLine:
    """The dimensions a daily fact is rolled up by: everything in a record except day and measures.

    ``metered`` says whether the rows carried a ConsumedQuantity, so a quantity of zero can be told
    apart from a quantity nobody reported; ``tagged`` whether they carried at least one tag.
    """

    provider: str
    billing_account: str
    sub_account: str | None
    sub_account_name: str | None
    service: str
    service_category: str | None
    region: str | None
    resource_id: str | None
    resource_type: str | None
    unit: str | None
    charge_category: str
    pricing_category: str | None
    commitment_discount_id: str | None
    metered: bool
    tagged: bool

    @property
    def is_usage(self) -> bool:
        """Whether this line measures consumption (see ``USAGE_CHARGE_CATEGORIES``)."""
        return self.charge_category in USAGE_CHARGE_CATEGORIES

    @property
    def is_committed(self) -> bool:
        """Whether a commitment discount (reservation, savings plan) covered this line."""
        return self.commitment_discount_id is not None or self.pricing_category == "Committed"


LINE_FIELDS: tuple[str, ...] = tuple(CostLine.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class DailyPoint:
    """One line's measures on one day."""

    billed_cost: float
    effective_cost: float
    quantity: float

    def cost(self, metric: CostMetric) -> float:
        """The cost in the chosen metric."""
        return self.billed_cost if metric == "billed_cost" else self.effective_cost


@dataclass(frozen=True, slots=True)
class DailyCostTable:
    """Records rolled up to daily grain: ``points[i]`` maps a day index into ``days`` to a measure.

    ``days`` is the contiguous calendar range from the first to the last day seen, so a day on
    which a line has no point is a day it cost nothing.
    """

    days: tuple[date, ...]
    lines: tuple[CostLine, ...]
    points: tuple[Mapping[int, DailyPoint], ...]
    tag_keys: Mapping[str, int]
    record_count: int

    def total_cost(self, metric: CostMetric) -> float:
        """Total cost of every line (usage and non-usage) in the chosen metric."""
        return sum(point.cost(metric) for series in self.points for point in series.values())

    def last_days(self, n: int) -> DailyCostTable:
        """The table restricted to its ``n`` most recent days (lines without a point there dropped)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        cut = max(0, len(self.days) - n)
        if cut == 0:
            return self
        lines: list[CostLine] = []
        points: list[dict[int, DailyPoint]] = []
        for line, series in zip(self.lines, self.points, strict=True):
            kept = {index - cut: point for index, point in series.items() if index >= cut}
            if kept:
                lines.append(line)
                points.append(kept)
        return DailyCostTable(self.days[cut:], tuple(lines), tuple(points), self.tag_keys, self.record_count)

    def to_json(self) -> dict[str, object]:
        """A JSON-compatible form for graph state; ``from_json`` reverses it."""
        lines: list[dict[str, object]] = []
        for line, series in zip(self.lines, self.points, strict=True):
            item: dict[str, object] = {name: getattr(line, name) for name in LINE_FIELDS}
            item["points"] = [
                [index, point.billed_cost, point.effective_cost, point.quantity]
                for index, point in sorted(series.items())
            ]
            lines.append(item)
        return {
            "days": [day.isoformat() for day in self.days],
            "record_count": self.record_count,
            "tag_keys": dict(self.tag_keys),
            "lines": lines,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DailyCostTable:
        """Parse ``to_json`` output; raises ``ValueError`` when the shape is wrong."""
        try:
            return _table_from_json(data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not a daily cost table: {exc!r}") from exc


def _table_from_json(data: Mapping[str, object]) -> DailyCostTable:
    days = tuple(date.fromisoformat(_as_str(day)) for day in _as_list(data["days"]))
    raw_tag_keys = data["tag_keys"]
    if not isinstance(raw_tag_keys, Mapping):
        raise TypeError("tag_keys must be an object")
    tag_keys = {_as_str(key): int(_as_float(count)) for key, count in raw_tag_keys.items()}
    lines: list[CostLine] = []
    points: list[dict[int, DailyPoint]] = []
    for raw in _as_list(data["lines"]):
        if not isinstance(raw, Mapping):
            raise TypeError("each line must be an object")
        lines.append(
            CostLine(
                provider=_as_str(raw["provider"]),
                billing_account=_as_str(raw["billing_account"]),
                sub_account=_as_opt_str(raw["sub_account"]),
                sub_account_name=_as_opt_str(raw["sub_account_name"]),
                service=_as_str(raw["service"]),
                service_category=_as_opt_str(raw["service_category"]),
                region=_as_opt_str(raw["region"]),
                resource_id=_as_opt_str(raw["resource_id"]),
                resource_type=_as_opt_str(raw["resource_type"]),
                unit=_as_opt_str(raw["unit"]),
                charge_category=_as_str(raw["charge_category"]),
                pricing_category=_as_opt_str(raw["pricing_category"]),
                commitment_discount_id=_as_opt_str(raw["commitment_discount_id"]),
                metered=bool(raw["metered"]),
                tagged=bool(raw["tagged"]),
            )
        )
        series: dict[int, DailyPoint] = {}
        for raw_point in _as_list(raw["points"]):
            index, billed, effective, quantity = _as_list(raw_point)
            day_index = int(_as_float(index))
            if not 0 <= day_index < len(days):
                raise ValueError(f"day index {day_index} outside the table's {len(days)} days")
            series[day_index] = DailyPoint(_as_float(billed), _as_float(effective), _as_float(quantity))
        points.append(series)
    return DailyCostTable(
        days=days,
        lines=tuple(lines),
        points=tuple(points),
        tag_keys=tag_keys,
        record_count=int(_as_float(data["record_count"])),
    )


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return list(value)


_LineKey = tuple[
    str, str, str | None, str | None, str, str | None, str | None, str | None, str | None, str | None, str,
    str | None, str | None, bool, bool,
]


class DailyRollup:
    """Accumulates records into a ``DailyCostTable`` in one streaming pass."""

    def __init__(self) -> None:
        self._index: dict[_LineKey, dict[date, list[float]]] = {}
        self._tag_keys: Counter[str] = Counter()
        self._count = 0

    def add(self, record: FocusRecord) -> None:
        """Fold one record in."""
        self._count += 1
        tags = record.tags
        if tags:
            self._tag_keys.update(tags.keys())
        # A plain tuple key (hashed once per row) is much cheaper than building a CostLine per row;
        # the CostLine is made once per distinct key in build().
        key = (
            record.provider, record.billing_account, record.sub_account, record.sub_account_name,
            record.service, record.service_category, record.region, record.resource_id,
            record.resource_type, record.unit, record.charge_category, record.pricing_category,
            record.commitment_discount_id, record.consumed_quantity is not None, bool(tags),
        )
        series = self._index.get(key)
        if series is None:
            series = self._index[key] = {}
        measures = series.get(record.day)
        if measures is None:
            measures = series[record.day] = [0.0, 0.0, 0.0]
        measures[0] += record.billed_cost
        measures[1] += record.effective_cost
        if record.consumed_quantity is not None:
            measures[2] += record.consumed_quantity

    def build(self) -> DailyCostTable:
        """The table of everything added so far."""
        seen = [day for series in self._index.values() for day in series]
        if not seen:
            return DailyCostTable((), (), (), dict(self._tag_keys), self._count)
        first, last = min(seen), max(seen)
        days = tuple(first + timedelta(days=i) for i in range((last - first).days + 1))
        lines = tuple(CostLine(*key) for key in self._index)
        points = tuple(
            {(day - first).days: DailyPoint(*measures) for day, measures in series.items()}
            for series in self._index.values()
        )
        return DailyCostTable(days, lines, points, dict(self._tag_keys), self._count)


def rollup_daily(records: Iterable[FocusRecord]) -> DailyCostTable:
    """Roll ``records`` up to daily grain (one pass, memory proportional to lines x days)."""
    rollup = DailyRollup()
    for record in records:
        rollup.add(record)
    return rollup.build()
