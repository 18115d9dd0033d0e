"""Cost anomaly detection over daily cost series.

One series per (provider, billing account, sub account, service), one value per calendar day (usage
charges only: credits and adjustments arrive on their own schedule and would look like anomalies).
Each series is checked for four kinds of anomaly:

``new_service``
    cost appears where there was none: at least ``new_service_quiet_days`` leading days without
    cost, then a typical daily cost above the floor.
``step_change``
    a level shift: the series is split where a two-level (median before / median after) fit has the
    smallest absolute error, and the shift counts when it is large against the noise, large relative
    to the old level and persistent (most days on each side of the split sit on their side of the
    midpoint) — a one-day spike cannot pass that last test. It is reported when it also clears the
    cost floor; a smaller one still sets the baseline, so its later days are not called spikes.
``spike`` / ``drop``
    single days (runs of consecutive days are merged) far above / below the expected cost.

Statistics are robust, so the anomalies being looked for do not distort the baseline: the level is a
median and the noise scale is the median absolute deviation (MAD) of the residuals scaled by 1.4826
to estimate a standard deviation, giving the modified z-score of Iglewicz and Hoaglin (3.5 flags by
default). The scale never falls below ``noise_floor`` x the expected level (a near-constant series
would otherwise turn a 3 % wobble into an "infinite" z) nor below ``min_cost_usd / z_threshold``,
which makes ``min_cost_usd`` the smallest deviation in dollars that can be flagged at all: cents-level
noise on tiny services never is.

With at least ``seasonality_min_days`` days (three weeks: three samples of each weekday), a
multiplicative day-of-week profile is estimated against a centred 7-day rolling median (which neither
the weekly pattern nor a step change biases) and divided out first when it explains a material part
of the variation, so quiet weekends are not reported as drops. With less history no weekly pattern
can be learned and a weekend dip may be reported as a drop; a new service's own days are therefore
only checked for spikes and drops once it has three weeks of history.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal, TypedDict

from cost_anomaly.focus import CostMetric, DailyCostTable, format_money

AnomalyKind = Literal["spike", "drop", "new_service", "step_change"]
Sensitivity = Literal["low", "medium", "high"]
SENSITIVITIES: tuple[Sensitivity, ...] = ("low", "medium", "high")

#: 1.4826 x MAD estimates the standard deviation of normally distributed data.
MAD_TO_SIGMA = 1.4826
#: Amounts below a cent are treated as no cost (rounding dust in exports).
CENT = 0.01
DAYS_PER_MONTH = 365 / 12
#: Weekdays whose typical cost is below this share of the median weekday carry no level information.
MIN_SEASONAL_FACTOR = 0.25
#: Share of the days on each side of a step change that must sit on that side of its midpoint.
STEP_PERSISTENCE = 0.8
_MULTIPLY = "\u00d7"  # the multiplication sign, spelled as an escape so linters see no confusable


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """Thresholds of the detector; ``for_sensitivity`` gives the presets."""

    #: Modified z-score beyond which a day is a spike or a drop.
    z_threshold: float = 3.5
    #: Score (level shift / noise scale) a step change needs. No higher than the spike threshold by
    #: default: a step must also persist, which a burst of noise does not, and a shift that passed
    #: as a spike on each of its days but not as a step would be reported as a string of spikes.
    step_threshold: float = 3.5
    #: Smallest step as a fraction of the previous level (0.3 = ±30 %).
    min_step_change: float = 0.3
    #: Smallest deviation, in dollars per day, worth reporting; also the floor for new services.
    min_cost_usd: float = 5.0
    #: The noise scale is at least this fraction of the expected level.
    noise_floor: float = 0.1
    #: Series shorter than this are not analysed (no baseline to compare against).
    min_history_days: int = 7
    #: Each side of a step change must span at least this many days.
    min_segment_days: int = 5
    #: Day-of-week seasonality is estimated only with this much history (three weeks).
    seasonality_min_days: int = 21
    #: A service is new only after this many leading days without cost.
    new_service_quiet_days: int = 7
    #: Only the most recent days are analysed (the step search is quadratic in the length).
    max_days: int = 92

    #: Currency of the amounts (explanations only; all series must be in this one currency).
    currency: str = "USD"

    @classmethod
    def for_sensitivity(
        cls,
        sensitivity: Sensitivity | float = "medium",
        *,
        min_cost_usd: float | None = None,
        currency: str = "USD",
    ) -> DetectionSettings:
        """Settings for a sensitivity: a preset name, or a z-score threshold in (robust) standard
        deviations — lower reports more. ``low`` reports only large, clear anomalies (z 5, floor $10,
        noise at least 20 % of the level), ``medium`` is the default (z 3.5, $5, 10 %), ``high``
        reports smaller ones (z 2.5, $2, 5 %).
        A numeric threshold sets both the spike and the step threshold and keeps the medium floor."""
        if isinstance(sensitivity, str):
            if sensitivity == "low":
                preset = cls(
                    z_threshold=5.0, step_threshold=5.0, min_step_change=0.5, min_cost_usd=10.0, noise_floor=0.2
                )
            elif sensitivity == "medium":
                preset = cls()
            elif sensitivity == "high":
                preset = cls(
                    z_threshold=2.5, step_threshold=2.5, min_step_change=0.2, min_cost_usd=2.0, noise_floor=0.05
                )
            else:
                choices = ", ".join(SENSITIVITIES)
                raise ValueError(f"unknown sensitivity {sensitivity!r}; use a number or one of {choices}")
        elif isinstance(sensitivity, bool) or not isinstance(sensitivity, int | float) or not sensitivity > 0:
            raise ValueError(f"sensitivity must be a positive number of standard deviations, got {sensitivity!r}")
        else:
            preset = cls(z_threshold=float(sensitivity), step_threshold=float(sensitivity))
        if min_cost_usd is not None and not min_cost_usd > 0:
            raise ValueError("min_cost_usd must be positive")
        return replace(
            preset,
            min_cost_usd=preset.min_cost_usd if min_cost_usd is None else float(min_cost_usd),
            currency=currency,
        )


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """What a daily cost series is about."""

    provider: str
    billing_account: str
    sub_account: str | None  # None for charges booked on the billing account itself
    service: str

    def sort_key(self) -> tuple[str, str, str, str]:
        """A total order (a missing sub account sorts first)."""
        return (self.provider, self.billing_account, self.sub_account or "", self.service)


@dataclass(frozen=True, slots=True)
class CostSeries:
    """Daily usage cost of one key; ``values[i]`` is the cost on ``days[i]`` of the table."""

    key: SeriesKey
    sub_account_name: str | None
    service_category: str | None
    values: tuple[float, ...]

    @property
    def total(self) -> float:
        """Total cost over all days."""
        return sum(self.values)


class AnomalyDict(TypedDict):
    """The JSON form of an ``Anomaly`` (days as ISO dates, amounts rounded to cents)."""

    kind: AnomalyKind
    provider: str
    billing_account: str
    sub_account: str | None
    sub_account_name: str | None
    service: str
    service_category: str | None
    start_day: str
    end_day: str
    days: int
    observed_usd: float
    expected_usd: float
    score: float
    excess_cost_usd: float
    explanation: str


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One detected anomaly.

    ``observed_usd`` and ``expected_usd`` are per-day amounts: the average over the anomalous days
    (for a step change, the levels after and before it; for a new service, its typical daily cost
    and zero). ``excess_cost_usd`` is the total difference over the anomalous days (negative for
    drops and downward steps). ``score`` is the robust z-score (largest in magnitude for a run).
    """

    kind: AnomalyKind
    key: SeriesKey
    sub_account_name: str | None
    service_category: str | None
    start_day: date
    end_day: date
    observed_usd: float
    expected_usd: float
    score: float
    excess_cost_usd: float
    explanation: str
    days: int = field(default=1)

    def to_dict(self) -> AnomalyDict:
        """The anomaly as JSON (amounts rounded to cents, score to 0.1)."""
        return {
            "kind": self.kind,
            "provider": self.key.provider,
            "billing_account": self.key.billing_account,
            "sub_account": self.key.sub_account,
            "sub_account_name": self.sub_account_name,
            "service": self.key.service,
            "service_category": self.service_category,
            "start_day": self.start_day.isoformat(),
            "end_day": self.end_day.isoformat(),
            "days": self.days,
            "observed_usd": round(self.observed_usd, 2),
            "expected_usd": round(self.expected_usd, 2),
            "score": round(self.score, 1),
            "excess_cost_usd": round(self.excess_cost_usd, 2),
            "explanation": self.explanation,
        }


def build_series(table: DailyCostTable, metric: CostMetric = "billed_cost") -> list[CostSeries]:
    """Sum the table's usage lines into one dense daily series per ``SeriesKey`` (sorted by key)."""
    width = len(table.days)
    sums: dict[SeriesKey, list[float]] = {}
    names: dict[SeriesKey, str | None] = {}
    categories: dict[SeriesKey, str | None] = {}
    for line, points in zip(table.lines, table.points, strict=True):
        if not line.is_usage:
            continue
        key = SeriesKey(line.provider, line.billing_account, line.sub_account, line.service)
        values = sums.get(key)
        if values is None:
            values = sums[key] = [0.0] * width
        names[key] = names.get(key) or line.sub_account_name
        categories[key] = categories.get(key) or line.service_category
        for index, point in points.items():
            values[index] += point.cost(metric)
    ordered = sorted(sums, key=SeriesKey.sort_key)
    return [CostSeries(key, names[key], categories[key], tuple(sums[key])) for key in ordered]


def detect_anomalies(
    series: Iterable[CostSeries],
    days: Sequence[date],
    settings: DetectionSettings | None = None,
) -> list[Anomaly]:
    """All anomalies in ``series`` (aligned to ``days``), largest absolute excess cost first."""
    settings = settings or DetectionSettings()
    days = list(days)
    start = max(0, len(days) - settings.max_days)
    found: list[Anomaly] = []
    for item in series:
        if len(item.values) != len(days):
            raise ValueError(f"series {item.key} has {len(item.values)} values for {len(days)} days")
        found.extend(_SeriesAnalysis(item, days[start:], list(item.values[start:]), settings).run())
    found.sort(key=lambda a: (-abs(a.excess_cost_usd), a.start_day, a.key.sort_key(), a.kind))
    return found


class _SeriesAnalysis:
    """The checks for one series; a class only to share the series' context between them."""

    def __init__(
        self, series: CostSeries, days: list[date], values: list[float], settings: DetectionSettings
    ) -> None:
        self.series = series
        self.days = days
        self.values = values
        self.s = settings

    def run(self) -> list[Anomaly]:
        x, s = self.values, self.s
        if len(x) < s.min_history_days or max((abs(v) for v in x), default=0.0) < s.min_cost_usd:
            return []  # nothing here can deviate by the floor: skip cheaply
        first = next((i for i, v in enumerate(x) if v > CENT), None)
        if first is None:
            return []
        if first >= s.new_service_quiet_days:
            return self._new_service(first)
        return self._level_anomalies(0)

    # -- new services -------------------------------------------------------------------------

    def _new_service(self, first: int) -> list[Anomaly]:
        tail = self.values[first:]
        level = statistics.median(tail)
        if level < self.s.min_cost_usd:
            return []  # appeared, but too small to matter
        total = sum(tail)
        start, end = self.days[first], self.days[-1]
        score = level / self._abs_scale_floor(self.s.z_threshold)
        money = self._money
        text = (
            f"{self._subject()} is new: no cost in the {first} days before {start}, then "
            f"{money(level)}/day typical ({money(total)} through {end})"
        )
        found = [
            self._anomaly(
                "new_service", first, len(self.values) - 1, observed=level, expected=0.0, score=score,
                excess=total, text=text,
            )
        ]
        # Once it exists, the new service is an ordinary series that can spike or drop too — given
        # enough history to learn its weekly pattern (otherwise its first weekend looks like a drop).
        if len(tail) >= max(self.s.min_history_days, self.s.seasonality_min_days):
            found.extend(self._level_anomalies(first))
        return found

    # -- steps, spikes and drops --------------------------------------------------------------

    def _level_anomalies(self, offset: int) -> list[Anomaly]:
        x = self.values[offset:]
        n = len(x)
        factors = self._weekly_factors(x, self.days[offset:])
        # Seasonally adjusted values; days a weekly pattern all but switches off carry no level
        # information (dividing by a tiny factor would only amplify noise), so they sit out.
        y = [v / f if f >= MIN_SEASONAL_FACTOR else None for v, f in zip(x, factors, strict=True)]
        found: list[Anomaly] = []
        step = self._find_step(y)
        if step is None:
            levels = [statistics.median(v for v in y if v is not None)] * n
        else:
            split, before, after, score = step
            levels = [before] * split + [after] * (n - split)
            # A real but small shift still defines the baseline (so its later days are not
            # reported as spikes); it is only reported when it clears the cost floor.
            if abs(after - before) >= self.s.min_cost_usd:
                found.append(
                    self._step_anomaly(offset, split, before=before, after=after, score=score, factors=factors)
                )
        expected = [max(level * f, 0.0) for level, f in zip(levels, factors, strict=True)]
        residuals = [v - e for v, e in zip(x, expected, strict=True)]
        noise = MAD_TO_SIGMA * statistics.median(abs(r) for r in residuals)
        floor = self._abs_scale_floor(self.s.z_threshold)
        scores = [
            r / max(noise, self.s.noise_floor * e, floor) for r, e in zip(residuals, expected, strict=True)
        ]
        found.extend(self._runs(offset, x, expected, scores))
        return found

    def _weekly_factors(self, x: list[float], days: list[date]) -> list[float]:
        """Per-day multiplicative weekday factors (all 1.0 unless a weekly pattern is both
        estimable and material).

        Each day is compared with the median of the 7 days centred on it — a local level that a
        weekly pattern cannot bias and that a step change disturbs only near the change — and the
        factor of a weekday is the median of its days' ratios, normalized so the median weekday is 1.
        """
        n = len(x)
        ones = [1.0] * n
        if n < self.s.seasonality_min_days:
            return ones
        local = [statistics.median(x[max(0, i - 3) : i + 4]) for i in range(n)]
        ratios: dict[int, list[float]] = {}
        for i, day in enumerate(days):
            if local[i] > CENT:
                ratios.setdefault(day.weekday(), []).append(x[i] / local[i])
        if len(ratios) < 7 or min(len(r) for r in ratios.values()) < 2:
            return ones
        raw = {weekday: statistics.median(r) for weekday, r in ratios.items()}
        norm = statistics.median(raw.values())
        if norm <= 0:
            return ones
        factor = {weekday: f / norm for weekday, f in raw.items()}
        factors = [factor[day.weekday()] for day in days]
        fitted = sum(abs(v - lv * f) for v, lv, f in zip(x, local, factors, strict=True))
        plain = sum(abs(v - lv) for v, lv in zip(x, local, strict=True))
        # Seven medians can fit noise; keep the pattern only if it explains a fifth of the spread.
        return factors if fitted < 0.8 * plain else ones

    def _find_step(self, y: list[float | None]) -> tuple[int, float, float, float] | None:
        """The best level shift as (split day index, level before, level after, score), if the
        series has one that is large against its noise, relative to its level, and persistent —
        whatever its size in dollars (the caller decides whether it is worth reporting)."""
        s = self.s
        known = [(i, v) for i, v in enumerate(y) if v is not None]
        values = [v for _, v in known]
        k, m = len(values), s.min_segment_days
        if k < 2 * m or max(values) - min(values) < CENT:
            return None  # medians of two segments cannot differ by more than the range
        best: tuple[float, int, float, float] | None = None
        for split in range(m, k - m + 1):
            left, right = values[:split], values[split:]
            before, after = statistics.median(left), statistics.median(right)
            error = sum(abs(v - before) for v in left) + sum(abs(v - after) for v in right)
            if best is None or error < best[0]:
                best = (error, split, before, after)
        assert best is not None  # the range above is never empty because k >= 2 * m
        _, split, before, after = best
        shift = after - before
        if abs(shift) < CENT or abs(shift) < s.min_step_change * max(abs(before), CENT):
            return None
        left, right = values[:split], values[split:]
        residuals = [abs(v - before) for v in left] + [abs(v - after) for v in right]
        scale = max(MAD_TO_SIGMA * statistics.median(residuals), s.noise_floor * abs(before), CENT)
        score = abs(shift) / scale
        # Persistence: a shift, not a burst, keeps most days on its side of the midpoint.
        midpoint = (before + after) / 2
        sign = 1 if shift > 0 else -1
        held_after = sum(1 for v in right if sign * (v - midpoint) > 0) / len(right)
        held_before = sum(1 for v in left if sign * (v - midpoint) < 0) / len(left)
        if score < s.step_threshold or held_after < STEP_PERSISTENCE or held_before < STEP_PERSISTENCE:
            return None
        return known[split][0], before, after, score

    def _step_anomaly(
        self, offset: int, split: int, *, before: float, after: float, score: float, factors: list[float]
    ) -> Anomaly:
        start = offset + split
        shift = after - before
        # What the days since the change cost beyond what the old level would have (weekly pattern
        # included), rather than shift x days, which would overstate it when weekends are quiet.
        excess = sum(
            v - before * f for v, f in zip(self.values[start:], factors[split:], strict=True)
        )
        change = f"{shift / before:+.0%}" if abs(before) >= CENT else "from nothing"
        direction = "more" if shift > 0 else "less"
        money = self._money
        text = (
            f"{self._subject()} moved from {money(before)}/day to {money(after)}/day on "
            f"{self.days[start]} ({change}, robust z = {score:.1f}); {money(abs(excess))} {direction} "
            f"since then, about {money(abs(shift) * DAYS_PER_MONTH)} {direction} per month if it persists"
        )
        return self._anomaly(
            "step_change", start, len(self.values) - 1, observed=after, expected=before,
            score=score if shift > 0 else -score, excess=excess, text=text,
        )

    def _runs(self, offset: int, x: list[float], expected: list[float], scores: list[float]) -> list[Anomaly]:
        """Merge consecutive flagged days of the same kind into one anomaly each."""
        threshold = self.s.z_threshold
        kinds: list[AnomalyKind | None] = [
            "spike" if z >= threshold else "drop" if z <= -threshold else None for z in scores
        ]
        found: list[Anomaly] = []
        i = 0
        while i < len(kinds):
            kind = kinds[i]
            if kind is None:
                i += 1
                continue
            j = i
            while j + 1 < len(kinds) and kinds[j + 1] == kind:
                j += 1
            observed = statistics.fmean(x[i : j + 1])
            typical = statistics.fmean(expected[i : j + 1])
            peak = max(scores[i : j + 1], key=abs)
            excess = sum(x[i : j + 1]) - sum(expected[i : j + 1])
            found.append(
                self._anomaly(
                    kind, offset + i, offset + j, observed=observed, expected=typical, score=peak, excess=excess,
                    text=self._run_text(
                        kind, offset + i, offset + j, observed=observed, typical=typical, z=peak, excess=excess
                    ),
                )
            )
            i = j + 1
        return found

    def _run_text(
        self, kind: AnomalyKind, i: int, j: int, *, observed: float, typical: float, z: float, excess: float
    ) -> str:
        if i == j:
            when, per_day, zname = f"on {self.days[i]}", "", "robust z"
        else:
            when = f"per day from {self.days[i]} to {self.days[j]} ({j - i + 1} days)"
            per_day, zname = "/day", "peak robust z"
        money = self._money
        if kind == "spike":
            if typical >= CENT:
                versus = f"{observed / typical:.1f}{_MULTIPLY} its typical {money(typical)}{per_day}"
            else:
                versus = f"against a typical {money(typical)}{per_day}"
        else:
            versus = f"{1 - observed / typical:.0%} below its typical {money(typical)}{per_day}"
        text = f"{self._subject()} cost {money(observed)} {when}, {versus} ({zname} = {z:.1f})"
        if i != j:
            text += f"; {money(abs(excess))} {'above' if excess > 0 else 'below'} expected in total"
        return text

    def _money(self, amount: float) -> str:
        return format_money(amount, self.s.currency)

    # -- helpers ------------------------------------------------------------------------------

    def _abs_scale_floor(self, threshold: float) -> float:
        # With this floor, a deviation below min_cost_usd can never reach the threshold.
        return self.s.min_cost_usd / threshold

    def _subject(self) -> str:
        key = self.series.key
        account = key.sub_account or key.billing_account
        name = self.series.sub_account_name
        shown = f"{name} ({account})" if name and name != account else account
        return f"{key.service} in {key.provider} account {shown}"

    def _anomaly(
        self, kind: AnomalyKind, i: int, j: int, *, observed: float, expected: float, score: float,
        excess: float, text: str,
    ) -> Anomaly:
        return Anomaly(
            kind=kind,
            key=self.series.key,
            sub_account_name=self.series.sub_account_name,
            service_category=self.series.service_category,
            start_day=self.days[i],
            end_day=self.days[j],
            observed_usd=observed,
            expected_usd=expected,
            score=score,
            excess_cost_usd=excess,
            explanation=text,
            days=j - i + 1,
        )
