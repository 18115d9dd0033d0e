"""Generate large FOCUS 1.0 billing CSVs shaped exactly like the FinOps Foundation sample.

Every generated row starts as a copy of a real row of ``focus_sample.csv`` (same 44 columns, same
spellings, same number formats and quoting: numbers and ``NULL`` bare, strings quoted, ``Tags`` as a
JSON string). The generator turns sample rows into long-lived "resources" that bill every day of
the period — hourly rows for hourly templates, one row a day for daily ones (the Microsoft rows) —
spread over the sub accounts the sample has for each billing account, with per-resource volumes,
per-row noise, an optional weekend dip, and optional injected anomalies whose ground truth is
returned (and written with ``--truth``) so tests and benchmarks can check a detector against it.

    python agents/cost-anomaly/tests/focus_gen.py --rows 100000 --out /tmp/focus_100k.csv
    python agents/cost-anomaly/tests/focus_gen.py --rows 20000 --out /tmp/x.csv --spike 2024-09-17:6 \\
        --step 2024-09-20:2 --new-service 2024-09-24:400 --truth /tmp/truth.json

Importable: ``generate(out, rows, ...) -> GenerationResult``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Literal

# The agent project's copy of the sample (``cost_anomaly/data``); this script needs no import of the agent.
SAMPLE_CSV = Path(__file__).resolve().parents[1] / "cost_anomaly" / "data" / "focus_sample.csv"

#: Columns the sample writes as bare numbers; everything else (except NULL) is quoted.
BARE_COLUMNS = frozenset(
    {"BilledCost", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "ListCost",
     "PricingQuantity", "Id"}
)
#: Cost columns scaled together with the usage quantity, and their number formats in the sample.
COST_COLUMNS = ("BilledCost", "ContractedCost", "EffectiveCost", "ListCost")
QUANTITY_FORMATS = {"ConsumedQuantity": "{:.15f}", "PricingQuantity": "{:.11f}"}
TIMESTAMP = "%Y-%m-%d %H:%M:%S"

InjectionKind = Literal["spike", "drop", "step", "new_service", "idle"]


@dataclass(frozen=True)
class Injection:
    """An anomaly to inject.

    ``spike``/``drop`` multiply one resource's cost by ``factor`` for ``days`` days from ``day``;
    ``step`` multiplies it from ``day`` to the end; ``new_service`` adds a service to an account
    that never had it, costing ``daily_cost_usd`` a day from ``day``; ``idle`` keeps one metered
    resource's cost unchanged but records no consumed quantity from ``day`` to the end (capacity
    paid for and unused: not a cost anomaly, an idle-resource recommendation).
    """

    kind: InjectionKind
    day: date
    factor: float = 6.0
    days: int = 1
    daily_cost_usd: float = 400.0


@dataclass(frozen=True)
class InjectedAnomaly:
    """Ground truth: which daily series (provider, billing account, sub account, service) changed."""

    kind: InjectionKind
    provider: str
    billing_account: str
    sub_account: str
    service: str
    start_day: date
    end_day: date
    resource_id: str

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["start_day"] = self.start_day.isoformat()
        data["end_day"] = self.end_day.isoformat()
        return data


@dataclass(frozen=True)
class GenerationResult:
    rows: int
    start: date
    days: int
    resources: int
    injected: tuple[InjectedAnomaly, ...]


@dataclass
class _Resource:
    template: dict[str, str]
    resource_id: str
    sub_account: tuple[str, str]
    volume: float
    hours: tuple[int, ...]  # hours of the day it bills (a daily template bills once, at 00:00)
    daily: bool
    active: range = range(0)  # day indexes it bills on; set by the plan (empty = every day)
    multipliers: dict[int, float] = field(default_factory=dict)  # day index -> cost multiplier
    idle_from: int | None = None  # from this day index on, no consumed quantity (cost unchanged)
    injected_new: bool = False  # an injected new service (left out of a clean copy)

    @property
    def key(self) -> tuple[str, str, str, str]:
        t = self.template
        return (t["ProviderName"], t["BillingAccountId"], self.sub_account[0], t["ServiceName"])

    def daily_cost(self) -> float:
        return _number(self.template["BilledCost"]) * self.volume * len(self.hours)


def load_templates(path: Path = SAMPLE_CSV) -> tuple[list[str], list[dict[str, str]]]:
    """The sample's header and rows (raw strings, ``NULL`` kept as the literal)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def generate(
    out: str | Path | IO[str],
    rows: int,
    *,
    start: date = date(2024, 9, 1),
    days: int = 30,
    seed: int = 0,
    hours_per_day: int = 24,
    weekend_factor: float = 1.0,
    noise: float = 0.05,
    max_volume: float = 1000.0,
    injections: Sequence[Injection] = (),
    template_path: Path = SAMPLE_CSV,
    clean: bool = False,
) -> GenerationResult:
    """Write exactly ``rows`` FOCUS rows covering ``days`` days from ``start`` to ``out``.

    ``hours_per_day`` is how many hourly rows an hourly resource emits per day (24 = every hour;
    fewer gives more resources for the same row count). ``max_volume`` bounds the per-resource
    multiplier applied to usage-metered quantities and costs (instance-hours stay one hour per row).
    ``clean=True`` writes the same data (same resources, same noise) without the injected changes:
    no multipliers, no idle days, no new-service rows — the control a detector must find nothing in.
    The ground truth returned is still that of the injections (what the unclean file would carry).
    """
    if days < 1 or not 1 <= hours_per_day <= 24:
        raise ValueError("days must be >= 1 and hours_per_day within 1..24")
    header, samples = load_templates(template_path)
    rng = random.Random(seed)
    plan = _Plan(header, samples, rng, start, days, hours_per_day, max_volume)
    injected = plan.allocate(rows, injections)
    if isinstance(out, str | Path):
        with Path(out).open("w", encoding="utf-8", newline="") as handle:
            written = plan.write(handle, noise, weekend_factor, clean=clean)
    else:
        written = plan.write(out, noise, weekend_factor, clean=clean)
    return GenerationResult(written, start, days, len(plan.resources), tuple(injected))


class _Plan:
    def __init__(
        self, header: list[str], samples: list[dict[str, str]], rng: random.Random, start: date, days: int,
        hours_per_day: int, max_volume: float,
    ) -> None:
        self.header = header
        self.rng = rng
        self.start = start
        self.days = days
        self.hours_per_day = hours_per_day
        self.max_volume = max_volume
        # Only ordinary usage rows make sense as resources that bill every day.
        self.templates = [t for t in samples if t["ChargeCategory"] == "Usage" and _number(t["BilledCost"]) >= 0]
        self.free = [t for t in self.templates if _number(t["BilledCost"]) == 0 and not _is_daily(t)]
        self.accounts: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for t in samples:
            pair = (t["SubAccountId"], t["SubAccountName"])
            pool = self.accounts.setdefault((t["ProviderName"], t["BillingAccountId"]), [])
            if pair not in pool:
                pool.append(pair)
        self.resources: list[_Resource] = []

    def _resource(self, template: dict[str, str], *, free: bool = False) -> _Resource:
        rng = self.rng
        index = len(self.resources)
        pool = self.accounts[(template["ProviderName"], template["BillingAccountId"])]
        own = (template["SubAccountId"], template["SubAccountName"])
        sub_account = own if rng.random() < 0.5 else rng.choice(pool)
        time_metered = "hour" in template["ConsumedUnit"].lower()
        volume = 1.0 if time_metered or free else math.exp(rng.uniform(0.0, math.log(self.max_volume)))
        daily = _is_daily(template)
        hours = (0,) if daily else tuple(sorted(rng.sample(range(24), self.hours_per_day)))
        resource_id = template["ResourceId"]
        if resource_id not in ("NULL", ""):
            suffix = hashlib.sha256(f"{index}:{resource_id}".encode()).hexdigest()[:8]
            resource_id = resource_id[:-8] + suffix if len(resource_id) > 12 else f"{resource_id}-{suffix}"
        return _Resource(template, resource_id, sub_account, volume, hours, daily)

    def allocate(self, rows: int, injections: Sequence[Injection]) -> list[InjectedAnomaly]:
        budget = rows
        truth: list[InjectedAnomaly] = []
        new_services = [i for i in injections if i.kind == "new_service"]
        # Idle resources are chosen first, among the metered ones: the other changes take the costliest.
        # Resources first (they define which accounts have which services), new services after.
        per_resource = self.hours_per_day * self.days
        reserved = sum(self.hours_per_day * (self.days - self._day_index(i.day)) for i in new_services)
        budget -= reserved
        if budget < 0:
            raise ValueError(f"{rows} rows cannot hold the injected new services")
        while True:
            template = self.rng.choice(self.templates)
            need = self.days if _is_daily(template) else per_resource
            if need > budget:
                break
            self.resources.append(self._resource(template))
            budget -= need
        if budget:
            self._add_filler(budget)
        targeted: set[tuple[str, str, str, str]] = set()
        for injection in sorted(injections, key=lambda i: i.kind != "idle"):
            if injection.kind == "idle":
                truth.append(self._inject_idle(injection, targeted))
            elif injection.kind == "new_service":
                truth.append(self._inject_new_service(injection))
            else:
                truth.append(self._inject_change(injection, targeted))
        return truth

    def _add_filler(self, rows: int) -> None:
        """Spend the last rows (fewer than one resource needs) on zero-cost rows, spread evenly over
        the days, so the total is exact without adding cost noise anywhere."""
        if not self.free:
            raise ValueError("the template file has no zero-cost hourly rows to pad with")
        per_day, extra = divmod(rows, self.days)
        filler = self._resource(self.rng.choice(self.free), free=True)
        if per_day:
            filler.hours = tuple(range(per_day))
            self.resources.append(filler)
        if extra:
            partial = self._resource(self.rng.choice(self.free), free=True)
            partial.hours = (per_day,)  # per_day < 24: the budget is below one 24-hour resource
            partial.active = range(extra)  # a zero-cost line, so billing on some days only is harmless
            self.resources.append(partial)

    def _day_index(self, day: date) -> int:
        index = (day - self.start).days
        if not 0 <= index < self.days:
            raise ValueError(f"injection day {day} is outside the generated period")
        return index

    def _inject_change(self, injection: Injection, targeted: set[tuple[str, str, str, str]]) -> InjectedAnomaly:
        first = self._day_index(injection.day)
        # Only full-period resources: not the padding, not an injected new service.
        candidates = [r for r in self.resources if r.key not in targeted and r.daily_cost() > 0 and not r.active]
        if not candidates:
            raise ValueError("no resource left to inject into")
        target = max(candidates, key=_Resource.daily_cost)
        targeted.add(target.key)
        last = self.days - 1 if injection.kind == "step" else min(self.days - 1, first + injection.days - 1)
        for d in range(first, last + 1):
            target.multipliers[d] = injection.factor
        provider, billing, sub, service = target.key
        return InjectedAnomaly(
            injection.kind, provider, billing, sub, service, injection.day,
            self.start + timedelta(days=last), target.resource_id,
        )

    def _inject_idle(self, injection: Injection, targeted: set[tuple[str, str, str, str]]) -> InjectedAnomaly:
        first = self._day_index(injection.day)
        candidates = [
            r for r in self.resources
            if r.key not in targeted and r.daily_cost() > 0 and not r.active and r.resource_id not in ("NULL", "")
            and _number(r.template["ConsumedQuantity"]) > 0 and r.template["CommitmentDiscountId"] in ("NULL", "")
        ]
        if not candidates:
            raise ValueError("no metered resource left to make idle")
        # The cheapest one worth stopping (a dollar a day or more): the costliest carry the other changes.
        worth = [r for r in candidates if r.daily_cost() >= 1.0] or candidates
        target = min(worth, key=_Resource.daily_cost)
        targeted.add(target.key)
        target.idle_from = first
        provider, billing, sub, service = target.key
        return InjectedAnomaly(
            "idle", provider, billing, sub, service, injection.day, self.start + timedelta(days=self.days - 1),
            target.resource_id,
        )

    def _inject_new_service(self, injection: Injection) -> InjectedAnomaly:
        first = self._day_index(injection.day)
        present = {r.key for r in self.resources}
        hourly = [t for t in self.templates if not _is_daily(t) and _number(t["BilledCost"]) > 0]
        hourly.sort(key=lambda t: -_number(t["BilledCost"]))
        for template in hourly:
            pool = self.accounts[(template["ProviderName"], template["BillingAccountId"])]
            for sub in pool:
                key = (template["ProviderName"], template["BillingAccountId"], sub[0], template["ServiceName"])
                if key in present:
                    continue
                resource = self._resource(template)
                resource.sub_account = sub
                resource.hours = tuple(range(self.hours_per_day))
                per_row = injection.daily_cost_usd / self.hours_per_day
                resource.volume = per_row / _number(template["BilledCost"])
                resource.active = range(first, self.days)
                resource.injected_new = True
                self.resources.append(resource)
                return InjectedAnomaly(
                    "new_service", key[0], key[1], key[2], key[3], injection.day,
                    self.start + timedelta(days=self.days - 1), resource.resource_id,
                )
        raise ValueError("every service already exists in every account; cannot inject a new one")

    def write(self, handle: IO[str], noise: float, weekend_factor: float, *, clean: bool = False) -> int:
        handle.write(",".join(_quote(name) for name in self.header) + "\n")
        bare = [name in BARE_COLUMNS for name in self.header]
        count = 0
        next_id = 1_000_000
        for line in self._rows(noise, weekend_factor, clean):
            line["Id"] = str(next_id)
            next_id += 1
            handle.write(",".join(_field(line[name], b) for name, b in zip(self.header, bare, strict=True)))
            handle.write("\n")
            count += 1
        return count

    def _rows(self, noise: float, weekend_factor: float, clean: bool = False) -> Iterator[dict[str, str]]:
        rng = self.rng
        for d in range(self.days):
            day = self.start + timedelta(days=d)
            month_start = day.replace(day=1)
            next_month = (month_start + timedelta(days=32)).replace(day=1)
            weekend = weekend_factor if day.weekday() >= 5 else 1.0
            for resource in self.resources:
                if resource.active and d not in resource.active:
                    continue
                t = resource.template
                base = (1.0 if clean else resource.multipliers.get(d, 1.0)) * weekend
                # An injected new service's rows are drawn but not written in a clean copy, so every
                # other row keeps exactly the noise it has in the injected file.
                skip = clean and resource.injected_new
                for hour in resource.hours:
                    begin = datetime(day.year, day.month, day.day, hour)
                    end = begin + (timedelta(days=1) if resource.daily else timedelta(hours=1))
                    scale = resource.volume * base * max(0.0, rng.gauss(1.0, noise))
                    if skip:
                        continue
                    row = dict(t)
                    row["ChargePeriodStart"] = begin.strftime(TIMESTAMP)
                    row["ChargePeriodEnd"] = end.strftime(TIMESTAMP)
                    row["BillingPeriodStart"] = f"{month_start} 00:00:00"
                    row["BillingPeriodEnd"] = f"{next_month} 00:00:00"
                    row["SubAccountId"], row["SubAccountName"] = resource.sub_account
                    row["ResourceId"] = resource.resource_id
                    for column in COST_COLUMNS:
                        if t[column] != "NULL":
                            row[column] = f"{_number(t[column]) * scale:.11f}"
                    idle = not clean and resource.idle_from is not None and d >= resource.idle_from
                    for column, spec in QUANTITY_FORMATS.items():
                        if t[column] != "NULL":
                            row[column] = spec.format(0.0 if idle else _number(t[column]) * scale)
                    yield row


def _is_daily(template: dict[str, str]) -> bool:
    begin = datetime.strptime(template["ChargePeriodStart"], TIMESTAMP)
    end = datetime.strptime(template["ChargePeriodEnd"], TIMESTAMP)
    return end - begin >= timedelta(days=1)


def _number(text: str) -> float:
    return 0.0 if text in ("NULL", "") else float(text)


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _field(value: str, bare: bool) -> str:
    if value == "NULL" or (bare and value != ""):
        return value
    return _quote(value)


# --------------------------------------------------------------------------------------------
# Command line


def _injection(kind: InjectionKind, default: float) -> Callable[[str], Injection]:
    def parse(text: str) -> Injection:
        parts = text.split(":")
        try:
            day = date.fromisoformat(parts[0])
            amount = float(parts[1]) if len(parts) > 1 and parts[1] else default
            span = int(parts[2]) if len(parts) > 2 else 1
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc
        if kind == "new_service":
            return Injection(kind, day, daily_cost_usd=amount)
        return Injection(kind, day, factor=amount, days=span)

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, required=True, help="exact number of data rows to write")
    parser.add_argument("--out", required=True, help="output CSV path ('-' for stdout)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 9, 1))
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours-per-day", type=int, default=24)
    parser.add_argument("--weekend-factor", type=float, default=1.0, help="cost multiplier on Sat/Sun")
    parser.add_argument("--noise", type=float, default=0.05, help="relative per-row noise (std dev)")
    parser.add_argument("--spike", action="append", default=[], type=_injection("spike", 6.0),
                        metavar="DAY[:FACTOR[:DAYS]]")
    parser.add_argument("--drop", action="append", default=[], type=_injection("drop", 0.1),
                        metavar="DAY[:FACTOR[:DAYS]]")
    parser.add_argument("--step", action="append", default=[], type=_injection("step", 2.0), metavar="DAY[:FACTOR]")
    parser.add_argument("--new-service", action="append", default=[], type=_injection("new_service", 400.0),
                        metavar="DAY[:DAILY_USD]")
    parser.add_argument("--idle", action="append", default=[], type=_injection("idle", 1.0), metavar="DAY")
    parser.add_argument("--truth", help="write the injected anomalies (ground truth) as JSON here")
    args = parser.parse_args(argv)
    injections = [*args.spike, *args.drop, *args.step, *args.new_service, *args.idle]
    try:
        out: str | IO[str] = sys.stdout if args.out == "-" else args.out
        result = generate(
            out, args.rows, start=args.start, days=args.days, seed=args.seed, hours_per_day=args.hours_per_day,
            weekend_factor=args.weekend_factor, noise=args.noise, injections=injections,
        )
    except ValueError as exc:
        parser.error(str(exc))
    truth = [item.to_json() for item in result.injected]
    if args.truth:
        Path(args.truth).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {result.rows} rows ({result.resources} resources, {result.days} days from {result.start}) "
        f"to {args.out}; injected {len(truth)} anomalies",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
