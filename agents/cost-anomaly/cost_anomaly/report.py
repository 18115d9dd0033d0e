"""The agent's result: a JSON document for machines and a markdown report for people.

``build_output`` assembles ``CostAnomalyOutput`` (the run's ``outputs``, reported to the control
plane on completion) from the daily roll-up, the anomalies and the recommendations;
``render_markdown`` turns it into the report a FinOps engineer reads in the dashboard or an email.
The remediation proposals are repeated at the top level under ``proposals`` so the platform can
queue approvals without walking the recommendations.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import NotRequired, Protocol, TypedDict

from cost_anomaly.detect import AnomalyDict, CostSeries, DetectionSettings, build_series
from cost_anomaly.focus import CostMetric, DailyCostTable, format_money
from cost_anomaly.recommend import ProposalDict, RecommendationDict

#: Bumped when a field of ``CostAnomalyOutput`` changes meaning or disappears.
OUTPUT_SCHEMA_VERSION = 1

_KIND_LABELS = {
    "spike": "spike",
    "drop": "drop",
    "new_service": "new service",
    "step_change": "step change",
}


class PeriodDict(TypedDict):
    """The analysed days (ISO dates; ``None`` when there was no data)."""

    start: str | None
    end: str | None
    days: int


class TotalsDict(TypedDict):
    """Spend over the analysed period in the cost metric (usage = what the series measure)."""

    records: int
    cost_usd: float
    usage_cost_usd: float
    by_provider: dict[str, float]


class SpendDict(TypedDict):
    """One of the costliest daily series."""

    provider: str
    billing_account: str
    sub_account: str | None
    sub_account_name: str | None
    service: str
    cost_usd: float
    share: float


class DetectionDict(TypedDict):
    """The thresholds the run used, so a reader knows what "no anomaly" means."""

    z_threshold: float
    step_threshold: float
    min_cost_usd: float


class SummaryDict(TypedDict):
    """Headline numbers."""

    anomaly_count: int
    anomalies_by_kind: dict[str, int]
    excess_cost_usd: float
    recommendation_count: int
    estimated_monthly_savings_usd: float
    proposal_count: int


class ServiceSpendDict(TypedDict):
    """One service's usage cost per day of ``DailySpendDict.days`` (``other`` sums the rest)."""

    service: str
    other: bool
    values: list[float]


class DailySpendDict(TypedDict):
    """Daily usage cost per service, for a chart: the costliest services and the rest as one."""

    days: list[str]
    series: list[ServiceSpendDict]


class CostAnomalyOutput(TypedDict):
    """The run's outputs. Amounts are in ``currency`` (USD unless the run chose another)."""

    schema_version: int
    currency: str
    cost_metric: CostMetric
    period: PeriodDict
    totals: TotalsDict
    detection: DetectionDict
    summary: SummaryDict
    top_spend: list[SpendDict]
    daily_spend: DailySpendDict
    anomalies: list[AnomalyDict]
    recommendations: list[RecommendationDict]
    proposals: list[ProposalDict]
    report_markdown: str
    remediations: NotRequired[list[dict[str, object]]]  # approved actions and their outcomes


def build_output(
    table: DailyCostTable,
    anomalies: Sequence[AnomalyDict],
    recommendations: Sequence[RecommendationDict],
    *,
    metric: CostMetric,
    detection: DetectionSettings,
    top_n: int = 5,
    chart_services: int = 6,
) -> CostAnomalyOutput:
    """Assemble the run's outputs, markdown report included."""
    by_provider: dict[str, float] = defaultdict(float)
    for line, points in zip(table.lines, table.points, strict=True):
        by_provider[line.provider] += sum(point.cost(metric) for point in points.values())
    series = build_series(table, metric)
    usage_total = sum(item.total for item in series)
    ranked = sorted(series, key=lambda item: (-item.total, item.key.sort_key()))[:top_n]
    top_spend: list[SpendDict] = [
        {
            "provider": item.key.provider,
            "billing_account": item.key.billing_account,
            "sub_account": item.key.sub_account,
            "sub_account_name": item.sub_account_name,
            "service": item.key.service,
            "cost_usd": round(item.total, 2),
            "share": round(item.total / usage_total, 4) if usage_total > 0 else 0.0,
        }
        for item in ranked
    ]
    proposals = [rec["proposal"] for rec in recommendations]
    output: CostAnomalyOutput = {
        "schema_version": OUTPUT_SCHEMA_VERSION,
        "currency": detection.currency,
        "cost_metric": metric,
        "period": {
            "start": table.days[0].isoformat() if table.days else None,
            "end": table.days[-1].isoformat() if table.days else None,
            "days": len(table.days),
        },
        "totals": {
            "records": table.record_count,
            "cost_usd": round(sum(by_provider.values()), 2),
            "usage_cost_usd": round(usage_total, 2),
            "by_provider": {name: round(cost, 2) for name, cost in sorted(by_provider.items())},
        },
        "detection": {
            "z_threshold": detection.z_threshold,
            "step_threshold": round(detection.step_threshold, 2),
            "min_cost_usd": detection.min_cost_usd,
        },
        "summary": {
            "anomaly_count": len(anomalies),
            "anomalies_by_kind": dict(sorted(Counter(a["kind"] for a in anomalies).items())),
            # Only unexpected spend adds up to "excess"; drops are reported but not netted against it.
            "excess_cost_usd": round(sum(max(0.0, a["excess_cost_usd"]) for a in anomalies), 2),
            "recommendation_count": len(recommendations),
            "estimated_monthly_savings_usd": round(
                sum(rec["estimated_monthly_savings_usd"] for rec in recommendations), 2
            ),
            "proposal_count": len(proposals),
        },
        "top_spend": top_spend,
        "daily_spend": _daily_spend(table, series, list(anomalies), chart_services),
        "anomalies": list(anomalies),
        "recommendations": list(recommendations),
        "proposals": proposals,
        "report_markdown": "",
    }
    output["report_markdown"] = render_markdown(output)
    return output


def _daily_spend(
    table: DailyCostTable, series: Sequence[CostSeries], anomalies: Sequence[AnomalyDict], limit: int
) -> DailySpendDict:
    """Usage cost per service and day: the ``limit`` costliest services (every service an anomaly is
    about among them, so each anomaly can be marked on its own line), the rest summed as one."""
    width = len(table.days)
    by_service: dict[str, list[float]] = {}
    for item in series:
        values = by_service.setdefault(item.key.service, [0.0] * width)
        for index, value in enumerate(item.values):
            values[index] += value
    ranked = sorted(by_service, key=lambda name: (-sum(by_service[name]), name))
    flagged = [name for name in dict.fromkeys(a["service"] for a in anomalies) if name in by_service]
    chosen = flagged[:limit] + [name for name in ranked if name not in flagged][: max(0, limit - len(flagged))]
    chosen.sort(key=lambda name: (-sum(by_service[name]), name))
    rest = [0.0] * width
    for name in ranked:
        if name not in chosen:
            rest = [a + b for a, b in zip(rest, by_service[name], strict=True)]
    out: list[ServiceSpendDict] = [
        {"service": name, "other": False, "values": [round(v, 2) for v in by_service[name]]} for name in chosen
    ]
    if len(chosen) < len(ranked):
        out.append({"service": "All other services", "other": True, "values": [round(v, 2) for v in rest]})
    return {"days": [day.isoformat() for day in table.days], "series": out}


def render_markdown(output: CostAnomalyOutput) -> str:
    """The human-readable report of ``output`` (GitHub-flavoured markdown)."""
    currency = output["currency"]

    def money(amount: float) -> str:
        return format_money(amount, currency)

    period, totals = output["period"], output["totals"]
    lines = ["# Cost anomaly report", ""]
    if period["days"] == 0:
        lines += ["The billing data had no rows to analyse.", ""]
        return "\n".join(lines)
    providers = ", ".join(f"{name} {money(cost)}" for name, cost in totals["by_provider"].items())
    metric = "BilledCost" if output["cost_metric"] == "billed_cost" else "EffectiveCost"
    lines += [
        f"**Period:** {period['start']} to {period['end']} ({period['days']} days) · "
        f"**Records:** {totals['records']:,} · **Total cost ({metric}):** {money(totals['cost_usd'])} · "
        f"**Providers:** {providers}",
        "",
        "## Summary",
        "",
        _anomaly_summary(output, money),
        _recommendation_summary(output, money),
        "",
        "## Anomalies",
        "",
    ]
    if output["anomalies"]:
        lines += [
            "| # | Kind | Service | Account | Day(s) | Observed/day | Expected/day | Score | Excess |",
            "|---|---|---|---|---|---:|---:|---:|---:|",
        ]
        for n, a in enumerate(output["anomalies"], 1):
            days = a["start_day"] if a["days"] == 1 else f"{a['start_day']} to {a['end_day']}"
            cells = [
                str(n), _KIND_LABELS[a["kind"]], a["service"], _account(a["sub_account"], a["sub_account_name"]),
                days, money(a["observed_usd"]), money(a["expected_usd"]), f"{a['score']:.1f}",
                money(a["excess_cost_usd"]),
            ]
            lines.append(_row(cells))
        lines.append("")
        lines += [f"{n}. {_escape(a['explanation'])}" for n, a in enumerate(output["anomalies"], 1)]
    else:
        detection = output["detection"]
        lines.append(
            f"No anomalies: no series deviated by {money(detection['min_cost_usd'])}/day or more at a robust "
            f"z-score of {detection['z_threshold']:g}."
        )
    lines += ["", "## Recommendations", ""]
    if output["recommendations"]:
        lines += [
            "| # | Recommendation | Est. savings/month | Proposed action | Risk |",
            "|---|---|---:|---|---|",
        ]
        for n, rec in enumerate(output["recommendations"], 1):
            proposal = rec["proposal"]
            lines.append(
                _row([
                    str(n), rec["title"], money(rec["estimated_monthly_savings_usd"]), f"`{proposal['action']}`",
                    proposal["risk"],
                ])
            )
        lines.append("")
        for n, rec in enumerate(output["recommendations"], 1):
            proposal = rec["proposal"]
            lines.append(
                f"{n}. **{_escape(rec['title'])}.** {_escape(rec['detail'])} Proposed action "
                f"`{proposal['action']}` (`{proposal['action_id']}`) needs approval before it runs."
            )
    else:
        lines.append("No recommendations: nothing idle, oversized, uncommitted or untagged above the thresholds.")
    if output["top_spend"]:
        lines += ["", "## Top spend", "", "| Service | Provider | Account | Cost | Share |", "|---|---|---|---:|---:|"]
        for item in output["top_spend"]:
            lines.append(
                _row([
                    item["service"], item["provider"], _account(item["sub_account"], item["sub_account_name"]),
                    money(item["cost_usd"]), f"{item['share']:.1%}",
                ])
            )
    lines.append("")
    return "\n".join(lines)


def _anomaly_summary(output: CostAnomalyOutput, money: _Money) -> str:
    summary = output["summary"]
    count = summary["anomaly_count"]
    if not count:
        return "- **No anomalies** detected."
    kinds = ", ".join(_plural(n, _KIND_LABELS.get(kind, kind)) for kind, n in summary["anomalies_by_kind"].items())
    excess = money(summary["excess_cost_usd"])
    return f"- **{_plural(count, 'anomaly', 'anomalies')}** ({kinds}): {excess} of unexpected spend."


def _recommendation_summary(output: CostAnomalyOutput, money: _Money) -> str:
    summary = output["summary"]
    count = summary["recommendation_count"]
    if not count:
        return "- **No recommendations.**"
    savings = money(summary["estimated_monthly_savings_usd"])
    proposals = _plural(summary["proposal_count"], "remediation proposal")
    return (
        f"- **{_plural(count, 'recommendation')}**: about {savings}/month in estimated savings; {proposals} "
        "awaiting approval (nothing is changed without it)."
    )


class _Money(Protocol):
    def __call__(self, amount: float) -> str: ...


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _account(account: str | None, name: str | None) -> str:
    if account is None:
        return name or "-"
    return f"{name} ({account})" if name and name != account else account


def _escape(text: str) -> str:
    """Keep free text (service names, resource ids, explanations) from breaking a table row or line.

    Only the pipe and line breaks matter: GitHub-flavoured markdown ignores intraword underscores,
    and a backslash before other characters would show up literally inside code spans.
    """
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_escape(cell) for cell in cells) + " |"
