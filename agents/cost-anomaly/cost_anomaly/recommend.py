"""Cost-saving recommendations and the remediation proposals that go with them.

Everything is derived from the daily roll-up of the billing data (``focus.DailyCostTable``):

``idle_resource``
    a resource meter that kept costing money over the recent window while recording (near) zero
    consumed quantity — paying for capacity nobody uses. Proposal: ``stop_resource`` (low risk).
``underused_resource``
    a meter whose recent usage is a small share of its own peak while its cost did not follow usage
    down (so it is billed for provisioned capacity). Proposal: ``rightsize`` to fit recent usage with
    2x headroom, assuming sizes come in halves as in the major clouds' instance families.
``oversized_resource``
    a time-metered meter (instance-, node-, vCPU-hours…) paying at least ``oversized_rate_ratio``
    times the median hourly rate of its peers (same account, service, unit and resource type) —
    a larger size or tier than everyone else. Proposal: ``rightsize`` one size down (half the rate),
    never below the peers' median.
``commitment_coverage``
    steady on-demand spend in a commitment-eligible service: the 10th-percentile daily on-demand
    cost is the floor that a spend commitment would always use. Proposal: ``purchase_commitment``
    (medium risk where the organisation already commits for this service elsewhere, high where it
    has no commitment at all).
``untagged_spend``
    the share of an account's resource spend without any tag; it saves nothing by itself but makes
    cost unallocatable. Proposal: ``tag_resources`` for the costliest untagged resources.

Proposals are data only. Each is bound to one exact action (``action_id`` is a hash of tool, action,
target and arguments), always ``requires_approval``, and executing one is the platform's approval
workflow's business, not this agent's.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from cost_anomaly.focus import CostLine, CostMetric, DailyCostTable, DailyPoint, format_money

RecommendationKind = Literal[
    "idle_resource", "underused_resource", "oversized_resource", "commitment_coverage", "untagged_spend"
]
RemediationAction = Literal["stop_resource", "rightsize", "purchase_commitment", "tag_resources"]
Risk = Literal["low", "medium", "high"]

#: The (write) tool a proposal is for; the agent never calls it, the approval workflow does.
REMEDIATION_TOOL = "compute.propose_remediation"
DAYS_PER_MONTH = 365 / 12


class ProposalDict(TypedDict):
    """A remediation proposal: one exact action an approver can approve or reject."""

    action_id: str
    tool: str
    action: RemediationAction
    target: dict[str, object]
    arguments: dict[str, object]
    estimated_monthly_savings_usd: float
    risk: Risk
    requires_approval: bool


class RecommendationDict(TypedDict):
    """The JSON form of a ``Recommendation``."""

    kind: RecommendationKind
    title: str
    detail: str
    estimated_monthly_savings_usd: float
    monthly_cost_usd: float
    provider: str
    billing_account: str
    sub_account: str | None
    sub_account_name: str | None
    service: str | None
    resource_id: str | None
    proposal: ProposalDict


@dataclass(frozen=True, slots=True)
class RecommendationSettings:
    """Thresholds of the recommender."""

    #: The current run rate is measured over the most recent days.
    recent_days: int = 7
    #: Recommendations saving less than this per month are not worth a human's attention.
    min_monthly_savings_usd: float = 10.0
    #: Consumed quantity at or below this (per day, in the meter's unit) counts as no usage.
    idle_quantity: float = 1e-6
    #: Recent usage at or below this share of the peak day's usage is "underused"...
    underused_share_of_peak: float = 0.1
    #: ...if the recent cost is still at least this share of the peak day's cost.
    underused_cost_retained: float = 0.5
    #: Hourly rate at least this multiple of the peers' median is "oversized".
    oversized_rate_ratio: float = 2.0
    #: Peers needed before a rate can be called an outlier.
    min_peers: int = 3
    #: Expected discount of a one-year, no-upfront spend commitment (savings plans: ~25-30 %).
    commitment_discount_rate: float = 0.25
    #: Days of history needed before recommending a commitment.
    commitment_min_days: int = 14
    #: Service categories where spend commitments exist at all.
    commitment_categories: frozenset[str] = field(
        default_factory=lambda: frozenset({"Compute", "Databases", "AI and Machine Learning"})
    )
    #: Untagged share of an account's resource spend that warrants a recommendation.
    untagged_min_share: float = 0.1
    #: ...and the untagged monthly spend it must amount to.
    untagged_min_monthly_usd: float = 10.0
    #: At most this many resources are listed in one tagging proposal.
    max_untagged_resources: int = 25
    #: Currency of the amounts (explanations only).
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommendation; ``proposal`` is the structured remediation an approver would approve."""

    kind: RecommendationKind
    title: str
    detail: str
    estimated_monthly_savings_usd: float
    #: The monthly spend the recommendation is about (run rate, covered floor, untagged spend).
    monthly_cost_usd: float
    provider: str
    billing_account: str
    sub_account: str | None
    sub_account_name: str | None
    service: str | None
    resource_id: str | None
    proposal: ProposalDict

    def to_dict(self) -> RecommendationDict:
        """The recommendation as JSON."""
        return {
            "kind": self.kind,
            "title": self.title,
            "detail": self.detail,
            "estimated_monthly_savings_usd": round(self.estimated_monthly_savings_usd, 2),
            "monthly_cost_usd": round(self.monthly_cost_usd, 2),
            "provider": self.provider,
            "billing_account": self.billing_account,
            "sub_account": self.sub_account,
            "sub_account_name": self.sub_account_name,
            "service": self.service,
            "resource_id": self.resource_id,
            "proposal": self.proposal,
        }


def remediation_proposal(
    action: RemediationAction,
    target: Mapping[str, object],
    arguments: Mapping[str, object],
    *,
    estimated_monthly_savings_usd: float,
    risk: Risk,
) -> ProposalDict:
    """A remediation proposal; ``action_id`` is stable for the same tool, action, target and arguments,
    so re-running the agent on the same data proposes the same, de-duplicable action."""
    bound = {"tool": REMEDIATION_TOOL, "action": action, "target": target, "arguments": arguments}
    digest = hashlib.sha256(json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {
        "action_id": f"act_{digest[:24]}",
        "tool": REMEDIATION_TOOL,
        "action": action,
        "target": dict(target),
        "arguments": dict(arguments),
        "estimated_monthly_savings_usd": round(estimated_monthly_savings_usd, 2),
        "risk": risk,
        "requires_approval": True,
    }


def recommend(
    table: DailyCostTable,
    metric: CostMetric = "billed_cost",
    settings: RecommendationSettings | None = None,
) -> list[Recommendation]:
    """All recommendations for ``table``: savings first (largest first), then tagging hygiene."""
    settings = settings or RecommendationSettings()
    if not table.days:
        return []
    found = [
        *_resource_recommendations(table, metric, settings),
        *_commitment_recommendations(table, metric, settings),
    ]
    found.sort(key=lambda r: (-r.estimated_monthly_savings_usd, r.kind, r.resource_id or "", r.service or ""))
    untagged = _untagged_recommendations(table, metric, settings)
    return found + untagged


# --------------------------------------------------------------------------------------------
# Resources: idle, underused, oversized


@dataclass
class _Meter:
    """One resource's usage of one unit: daily cost and quantity summed over its lines."""

    line: CostLine
    cost: dict[int, float] = field(default_factory=dict)
    quantity: dict[int, float] = field(default_factory=dict)

    def add(self, points: Mapping[int, DailyPoint], metric: CostMetric) -> None:
        for index, point in points.items():
            self.cost[index] = self.cost.get(index, 0.0) + point.cost(metric)
            self.quantity[index] = self.quantity.get(index, 0.0) + point.quantity


def _meters(table: DailyCostTable, metric: CostMetric) -> list[_Meter]:
    meters: dict[tuple[object, ...], _Meter] = {}
    for line, points in zip(table.lines, table.points, strict=True):
        # Committed lines are already discounted, and unmetered ones say nothing about usage.
        if not line.is_usage or line.resource_id is None or not line.metered or line.is_committed:
            continue
        key = (line.provider, line.billing_account, line.sub_account, line.resource_id, line.service, line.unit)
        meter = meters.get(key)
        if meter is None:
            meter = meters[key] = _Meter(line)
        meter.add(points, metric)
    return list(meters.values())


def _resource_recommendations(
    table: DailyCostTable, metric: CostMetric, s: RecommendationSettings
) -> list[Recommendation]:
    n = len(table.days)
    window = range(max(0, n - s.recent_days), n)
    width = len(window)
    meters = _meters(table, metric)
    found: dict[tuple[object, ...], Recommendation] = {}

    def keep(meter: _Meter, rec: Recommendation | None) -> None:
        # One recommendation per resource: the first (strongest) kind found wins.
        key = (meter.line.provider, meter.line.billing_account, meter.line.sub_account, meter.line.resource_id)
        if rec is not None and rec.estimated_monthly_savings_usd >= s.min_monthly_savings_usd:
            found.setdefault(key, rec)

    for meter in meters:
        recent_cost = sum(meter.cost.get(i, 0.0) for i in window) / width
        if recent_cost * DAYS_PER_MONTH < s.min_monthly_savings_usd:
            continue
        recent_quantity = sum(meter.quantity.get(i, 0.0) for i in window) / width
        keep(meter, _idle(meter, recent_cost, recent_quantity, width, s))
        keep(meter, _underused(meter, recent_cost, recent_quantity, width, s))
    for meter, rate, peers in _rate_outliers(meters, window, s):
        recent_quantity = sum(meter.quantity.get(i, 0.0) for i in window) / width
        keep(meter, _oversized(meter, rate, peers, recent_quantity, s))
    return list(found.values())


def _idle(
    meter: _Meter, recent_cost: float, recent_quantity: float, width: int, s: RecommendationSettings
) -> Recommendation | None:
    if recent_quantity > s.idle_quantity:
        return None
    line = meter.line
    monthly = recent_cost * DAYS_PER_MONTH
    detail = (
        f"{_resource_label(line)} cost {_money(recent_cost, s)}/day over the last {width} days with no "
        f"recorded usage ({line.unit}); stopping it saves about {_money(monthly, s)}/month."
    )
    proposal = remediation_proposal(
        "stop_resource",
        _resource_target(line),
        {"reason": "no_usage", "window_days": width, "unit": line.unit},
        estimated_monthly_savings_usd=monthly,
        risk="low",
    )
    return _resource_rec(
        "idle_resource", f"Stop idle {line.service} resource", detail, savings=monthly, spend=monthly, line=line,
        proposal=proposal,
    )


def _underused(
    meter: _Meter, recent_cost: float, recent_quantity: float, width: int, s: RecommendationSettings
) -> Recommendation | None:
    if not meter.quantity:
        return None
    peak_day = max(meter.quantity, key=lambda i: meter.quantity[i])
    peak_quantity = meter.quantity[peak_day]
    peak_cost = meter.cost.get(peak_day, 0.0)
    if peak_quantity <= s.idle_quantity or peak_cost <= 0:
        return None
    share = recent_quantity / peak_quantity
    if share > s.underused_share_of_peak or recent_cost < s.underused_cost_retained * peak_cost:
        return None  # either still busy, or billed per use (cost fell with usage: nothing to save)
    fraction = _capacity_fraction(share)
    monthly = recent_cost * (1 - fraction) * DAYS_PER_MONTH
    line = meter.line
    detail = (
        f"{_resource_label(line)} used {share:.0%} of its peak {line.unit} over the last {width} days while "
        f"still costing {_money(recent_cost, s)}/day; resizing it to {fraction:.1%} of its capacity (recent "
        f"usage with 2\u00d7 headroom) saves about {_money(monthly, s)}/month."
    )
    proposal = remediation_proposal(
        "rightsize",
        _resource_target(line),
        {"reason": "underused", "usage_share_of_peak": round(share, 4), "target_capacity_fraction": fraction,
         "window_days": width},
        estimated_monthly_savings_usd=monthly,
        risk="medium",
    )
    return _resource_rec(
        "underused_resource", f"Downsize underused {line.service} resource", detail, savings=monthly,
        spend=recent_cost * DAYS_PER_MONTH, line=line, proposal=proposal,
    )


def _capacity_fraction(share: float) -> float:
    """The smallest halving of capacity (1, 1/2, 1/4, …) that still gives 2x headroom over ``share``."""
    if share <= 0:
        return 0.0625  # no usage signal at all: four sizes down is the furthest we would suggest
    steps = math.floor(-math.log2(min(1.0, 2 * share)))
    return float(max(2.0**-steps, 0.0625))


def _rate_outliers(
    meters: Sequence[_Meter], window: range, s: RecommendationSettings
) -> list[tuple[_Meter, float, list[float]]]:
    """Time-metered meters whose recent hourly rate is an outlier among their peers."""
    groups: dict[tuple[object, ...], list[tuple[_Meter, float]]] = defaultdict(list)
    for meter in meters:
        unit = (meter.line.unit or "").lower()
        if "hour" not in unit:
            continue  # only an hourly rate reflects the size of what is running
        quantity = sum(meter.quantity.get(i, 0.0) for i in window)
        cost = sum(meter.cost.get(i, 0.0) for i in window)
        if quantity <= 0 or cost <= 0:
            continue
        line = meter.line
        # Peers share the account too: a team's fleet is sized for its workload, so an instance far
        # above its own siblings is the suspicious one, not every large instance in the organisation.
        key = (line.provider, line.billing_account, line.sub_account, line.service, line.unit, line.resource_type)
        groups[key].append((meter, cost / quantity))
    outliers: list[tuple[_Meter, float, list[float]]] = []
    for members in groups.values():
        if len(members) <= s.min_peers:
            continue
        for meter, rate in members:
            peers = [other for m, other in members if m is not meter]
            if rate >= s.oversized_rate_ratio * statistics.median(peers):
                outliers.append((meter, rate, peers))
    return outliers


def _oversized(
    meter: _Meter, rate: float, peers: list[float], recent_quantity: float, s: RecommendationSettings
) -> Recommendation | None:
    peer_rate = statistics.median(peers)
    target = max(peer_rate, rate / 2)  # one size down halves the rate; never below the peers
    monthly = (rate - target) * recent_quantity * DAYS_PER_MONTH
    if monthly < s.min_monthly_savings_usd:
        return None
    line = meter.line
    per = _singular(line.unit)
    detail = (
        f"{_resource_label(line)} pays {_money(rate, s, 4)} per {per}, {rate / peer_rate:.1f}\u00d7 the median "
        f"{_money(peer_rate, s, 4)} of the {len(peers)} other {line.service} resources in its account; one size "
        f"down ({_money(target, s, 4)} per {per}) saves about {_money(monthly, s)}/month."
    )
    proposal = remediation_proposal(
        "rightsize",
        _resource_target(line),
        {"reason": "oversized", "unit": line.unit, "current_unit_rate_usd": round(rate, 6),
         "target_unit_rate_usd": round(target, 6), "peer_median_unit_rate_usd": round(peer_rate, 6)},
        estimated_monthly_savings_usd=monthly,
        risk="medium",
    )
    return _resource_rec(
        "oversized_resource", f"Rightsize oversized {line.service} resource", detail, savings=monthly,
        spend=rate * recent_quantity * DAYS_PER_MONTH, line=line, proposal=proposal,
    )


def _resource_rec(
    kind: RecommendationKind, title: str, detail: str, *, savings: float, spend: float, line: CostLine,
    proposal: ProposalDict,
) -> Recommendation:
    return Recommendation(
        kind=kind,
        title=title,
        detail=detail,
        estimated_monthly_savings_usd=savings,
        monthly_cost_usd=spend,
        provider=line.provider,
        billing_account=line.billing_account,
        sub_account=line.sub_account,
        sub_account_name=line.sub_account_name,
        service=line.service,
        resource_id=line.resource_id,
        proposal=proposal,
    )


def _resource_target(line: CostLine) -> dict[str, object]:
    return {
        "provider": line.provider,
        "billing_account": line.billing_account,
        "sub_account": line.sub_account,
        "resource_id": line.resource_id,
        "resource_type": line.resource_type,
        "service": line.service,
        "region": line.region,
    }


def _resource_label(line: CostLine) -> str:
    return f"{line.resource_id} ({line.service}, {_account_label(line.sub_account, line.sub_account_name)})"


def _singular(unit: str | None) -> str:
    """``Hours`` -> ``Hour``, ``GB-Months`` -> ``GB-Month`` (FOCUS units are plural nouns)."""
    if not unit:
        return "unit"
    return unit[:-1] if unit.endswith("s") and not unit.endswith("ss") else unit


def _money(amount: float, s: RecommendationSettings, digits: int = 2) -> str:
    return format_money(amount, s.currency, digits=digits)


def _account_label(account: str | None, name: str | None) -> str:
    if account is None:
        return name or "unknown account"
    return f"{name} ({account})" if name and name != account else account


# --------------------------------------------------------------------------------------------
# Commitments


def _commitment_recommendations(
    table: DailyCostTable, metric: CostMetric, s: RecommendationSettings
) -> list[Recommendation]:
    n = len(table.days)
    if n < s.commitment_min_days:
        return []
    on_demand: dict[tuple[str, str, str], list[float]] = {}
    categories: dict[tuple[str, str, str], str | None] = {}
    committed_services: set[tuple[str, str]] = set()
    for line, points in zip(table.lines, table.points, strict=True):
        if not line.is_usage:
            continue
        if line.is_committed:
            committed_services.add((line.provider, line.service))
            continue
        if line.pricing_category not in (None, "Standard"):
            continue  # spot/dynamic prices cannot be committed to
        key = (line.provider, line.billing_account, line.service)
        daily = on_demand.setdefault(key, [0.0] * n)
        categories[key] = categories.get(key) or line.service_category
        for index, point in points.items():
            daily[index] += point.cost(metric)
    found: list[Recommendation] = []
    for key, daily in on_demand.items():
        provider, account, service = key
        committed_elsewhere = (provider, service) in committed_services
        if not committed_elsewhere and categories[key] not in s.commitment_categories:
            continue
        floor = _percentile(daily, 0.1)
        monthly = floor * s.commitment_discount_rate * DAYS_PER_MONTH
        if floor <= 0 or monthly < s.min_monthly_savings_usd:
            continue
        context = (
            "this service already uses commitment discounts elsewhere in the organisation"
            if committed_elsewhere
            else "no commitment discount covers this service anywhere"
        )
        detail = (
            f"{service} in {provider} billing account {account} ran at least {_money(floor, s)}/day on demand "
            f"on 90% of the last {n} days ({context}); a one-year spend commitment of "
            f"{_money(floor / 24, s)}/hour covering that floor at a {s.commitment_discount_rate:.0%} discount "
            f"saves about {_money(monthly, s)}/month."
        )
        proposal = remediation_proposal(
            "purchase_commitment",
            {"provider": provider, "billing_account": account, "service": service},
            {"commitment_category": "Spend", "hourly_commitment_usd": round(floor / 24, 2), "term_months": 12,
             "payment_option": "no_upfront", "assumed_discount_rate": s.commitment_discount_rate},
            estimated_monthly_savings_usd=monthly,
            risk="medium" if committed_elsewhere else "high",
        )
        found.append(
            Recommendation(
                kind="commitment_coverage",
                title=f"Cover steady {service} spend with a commitment",
                detail=detail,
                estimated_monthly_savings_usd=monthly,
                monthly_cost_usd=floor * DAYS_PER_MONTH,
                provider=provider,
                billing_account=account,
                sub_account=None,
                sub_account_name=None,
                service=service,
                resource_id=None,
                proposal=proposal,
            )
        )
    return found


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between closest ranks."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --------------------------------------------------------------------------------------------
# Tagging


def _untagged_recommendations(
    table: DailyCostTable, metric: CostMetric, s: RecommendationSettings
) -> list[Recommendation]:
    n = len(table.days)
    totals: dict[tuple[str, str, str | None], float] = defaultdict(float)
    untagged: dict[tuple[str, str, str | None], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    names: dict[tuple[str, str, str | None], str | None] = {}
    for line, points in zip(table.lines, table.points, strict=True):
        # Only resources can carry tags; account-level charges (support, transfer) are not counted.
        if not line.is_usage or line.resource_id is None:
            continue
        key = (line.provider, line.billing_account, line.sub_account)
        names[key] = names.get(key) or line.sub_account_name
        cost = sum(point.cost(metric) for point in points.values())
        totals[key] += cost
        if not line.tagged:
            untagged[key][line.resource_id] += cost
    # The tag keys most used elsewhere are the ones to ask for (e.g. application, environment).
    wanted = [key for key, _ in sorted(table.tag_keys.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
    found: list[Recommendation] = []
    for key, resources in untagged.items():
        cost = sum(resources.values())
        total = totals[key]
        monthly = cost / n * DAYS_PER_MONTH
        if total <= 0 or cost / total < s.untagged_min_share or monthly < s.untagged_min_monthly_usd:
            continue
        provider, account, sub_account = key
        ranked = sorted(resources.items(), key=lambda kv: (-kv[1], kv[0]))
        listed = [resource for resource, _ in ranked[: s.max_untagged_resources]]
        label = _account_label(sub_account, names.get(key))
        count = f"{len(resources)} resource" + ("s" if len(resources) != 1 else "")
        which = f"the costliest {len(listed)} first" if len(listed) < len(resources) else (
            "them" if len(listed) > 1 else "it"
        )
        detail = (
            f"{cost / total:.0%} of the resource spend in {provider} account {label} "
            f"({_money(monthly, s)}/month across {count}) carries no tags, so it cannot be "
            f"allocated to an application or team; tag {which}"
            + (f" with {', '.join(wanted)}." if wanted else ".")
        )
        proposal = remediation_proposal(
            "tag_resources",
            {"provider": provider, "billing_account": account, "sub_account": sub_account},
            {"resource_ids": listed, "required_tag_keys": wanted},
            estimated_monthly_savings_usd=0.0,
            risk="low",
        )
        found.append(
            Recommendation(
                kind="untagged_spend",
                title=f"Tag untagged spend in {label}",
                detail=detail,
                estimated_monthly_savings_usd=0.0,
                monthly_cost_usd=monthly,
                provider=provider,
                billing_account=account,
                sub_account=sub_account,
                sub_account_name=names.get(key),
                service=None,
                resource_id=None,
                proposal=proposal,
            )
        )
    found.sort(key=lambda r: (-r.monthly_cost_usd, r.provider, r.sub_account or ""))
    return found
