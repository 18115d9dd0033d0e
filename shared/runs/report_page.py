"""A run's report as one self-contained HTML page (``GET /agents/{agent_id}/runs/{run_id}/report``).

The page needs nothing but itself: styles inline, the chart an inline SVG, no script, no font, no
image, no link to fetch, so it opens offline and can be saved or mailed as it is. It follows the
reader's colour scheme (``prefers-color-scheme``: light and dark).

A run's outputs are written by agent code, which is never trusted: every value is read defensively
(wrong types are skipped, sizes are capped) and every text is HTML-escaped; the operation serves the
page with a Content-Security-Policy that forbids scripts and any fetch. Outputs in the built-in
cost-anomaly agent's shape (``summary``, ``daily_spend``, ``anomalies``, ``recommendations``) get
the full report: summary, daily spend per service as a chart with each anomaly marked, the
explanations, the recommendations with their estimated savings. Any other run gets a page with its
status and its outputs as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from shared.runs.models import RunOut

#: Content-Security-Policy of the page: inline styles only, nothing fetched, nothing run.
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'")
#: Series colours, readable on the light and the dark background alike (the last: all other services).
SERIES_COLOURS = ("#2563eb", "#d97706", "#059669", "#9333ea", "#db2777", "#0891b2", "#64748b")
#: The colour of anomaly markers.
ANOMALY_COLOUR = "#dc2626"
MAX_DAYS = 400
MAX_SERIES = len(SERIES_COLOURS)
MAX_ROWS = 200
_CHART_W, _CHART_H = 880, 320
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 16, 16, 40
_KINDS = {"spike": "Spike", "drop": "Drop", "new_service": "New service", "step_change": "Step change"}

_STYLE = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #111827; --muted: #6b7280; --card: #f3f4f6;
  --line: #d1d5db; --accent: #2563eb; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0f172a; --fg: #e5e7eb; --muted: #9ca3af; --card: #1e293b; --line: #334155; --accent: #60a5fa; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 24px 16px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; } h2 { font-size: 1.2rem; margin: 32px 0 8px; }
.meta { color: var(--muted); margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px; }
.card { background: var(--card); border-radius: 8px; padding: 12px 16px; }
.card b { display: block; font-size: 1.4rem; }
.card span { color: var(--muted); font-size: .85rem; }
figure { margin: 0; } svg { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; } svg text { fill: var(--muted); font-size: 11px; }
svg .series { fill: none; stroke-width: 2.5; stroke-linejoin: round; stroke-linecap: round; }
svg .marker { fill: #dc2626; stroke: var(--bg); stroke-width: 2; }
svg .mark-line { stroke: #dc2626; stroke-width: 1; stroke-dasharray: 4 3; }
svg .mark-label { fill: #dc2626; font-weight: 700; font-size: 12px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 8px 0 0; padding: 0; list-style: none;
  font-size: .85rem; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 6px;
  vertical-align: -1px; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; }
.badge { display: inline-block; min-width: 1.6em; text-align: center; border-radius: 999px; background: #dc2626;
  color: #fff; font-weight: 700; font-size: .8rem; padding: 0 6px; }
ol.explain li { margin: 4px 0; }
pre { background: var(--card); padding: 12px; border-radius: 8px; overflow-x: auto; font-size: .85rem; }
.empty { color: var(--muted); }
"""


def render_report_page(run: RunOut) -> str:
    """The run's report as a complete HTML document."""
    outputs = run.outputs if isinstance(run.outputs, Mapping) else None
    title = "Cost anomaly report" if outputs is not None and _is_cost_report(outputs) else "Run report"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        f"<title>{escape(title)} · run {escape(run.id)}</title>",
        f"<style>{_STYLE}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Run <code>{escape(run.id)}</code> · agent version {escape(run.version)} · '
        f"status <b>{escape(str(run.status.value))}</b> · started {escape(_when(run.started_at))} · "
        f"finished {escape(_when(run.finished_at))}</p>",
    ]
    if outputs is not None and _is_cost_report(outputs):
        parts.append(_cost_report(outputs))
    elif outputs is not None:
        parts += ["<h2>Outputs</h2>", f"<pre>{escape(json.dumps(outputs, indent=2, default=str)[:200_000])}</pre>"]
    else:
        message = run.error if run.error else "This run has no outputs yet."
        parts.append(f'<p class="empty">{escape(str(message))}</p>')
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _when(value: object) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else "—"


def _is_cost_report(outputs: Mapping[str, Any]) -> bool:
    return isinstance(outputs.get("summary"), Mapping) and isinstance(outputs.get("anomalies"), list)


# -- safe readers of untrusted values ------------------------------------------------------------
def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: object, limit: int = 2000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value[:MAX_ROWS] if isinstance(item, Mapping)] if isinstance(value, list) else []


def _money(value: object, currency: str) -> str:
    number = _num(value)
    if number is None:
        return "—"
    sign = "-" if number < 0 else ""
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{sign}{symbol}{abs(number):,.2f}"


# -- the cost-anomaly report ---------------------------------------------------------------------
def _cost_report(outputs: Mapping[str, Any]) -> str:
    currency = _text(outputs.get("currency"), 3) or "USD"
    summary = _mapping(outputs.get("summary"))
    period = _mapping(outputs.get("period"))
    totals = _mapping(outputs.get("totals"))
    anomalies = _dicts(outputs.get("anomalies"))
    recommendations = _dicts(outputs.get("recommendations"))
    records = _num(totals.get("records"))
    cards = [
        (str(len(anomalies)), "anomalies found"),
        (_money(summary.get("excess_cost_usd"), currency), "unexpected spend"),
        (str(len(recommendations)), "recommendations"),
        (_money(summary.get("estimated_monthly_savings_usd"), currency) + "/mo", "estimated savings"),
        (_money(totals.get("cost_usd"), currency), "total cost in the period"),
        (f"{int(records):,}" if records is not None else "—", "billing records"),
    ]
    html = [
        f'<p class="meta">Period {escape(_text(period.get("start"), 40) or "—")} to '
        f'{escape(_text(period.get("end"), 40) or "—")} · amounts in {escape(currency)}</p>',
        '<section aria-label="Summary"><div class="cards">',
        *(f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>' for value, label in cards),
        "</div></section>",
        "<h2>Daily spend per service</h2>",
        _chart(outputs.get("daily_spend"), anomalies, currency),
        "<h2>Anomalies</h2>",
        _anomalies(anomalies, currency),
        "<h2>Recommendations</h2>",
        _recommendations(recommendations, currency),
    ]
    return "\n".join(html)


def _series(daily: object) -> tuple[list[str], list[tuple[str, list[float]]]]:
    if not isinstance(daily, Mapping):
        return [], []
    days = [_text(day, 40) for day in daily.get("days", [])[:MAX_DAYS]] if isinstance(daily.get("days"), list) else []
    series: list[tuple[str, list[float]]] = []
    for item in _dicts(daily.get("series"))[:MAX_SERIES]:
        values = item.get("values")
        if not isinstance(values, list) or len(values) < len(days):
            continue
        series.append((_text(item.get("service"), 200), [max(0.0, _num(v) or 0.0) for v in values[: len(days)]]))
    return days, series


def _chart(daily: object, anomalies: Sequence[Mapping[str, Any]], currency: str) -> str:
    days, series = _series(daily)
    if len(days) < 2 or not series:
        return '<p class="empty">No daily spend to chart.</p>'
    top = max(max(values) for _, values in series) or 1.0
    top = _nice_ceiling(top)
    plot_w, plot_h = _CHART_W - _PAD_L - _PAD_R, _CHART_H - _PAD_T - _PAD_B

    def x(index: int) -> float:
        return _PAD_L + plot_w * index / (len(days) - 1)

    def y(value: float) -> float:
        return _PAD_T + plot_h * (1 - value / top)

    svg = [f'<svg id="spend-chart" viewBox="0 0 {_CHART_W} {_CHART_H}" role="img" '
           f'aria-label="Daily spend per service with anomalies marked">']
    for step in range(5):
        value = top * step / 4
        svg.append(f'<line class="grid" x1="{_PAD_L}" x2="{_CHART_W - _PAD_R}" '
                   f'y1="{y(value):.1f}" y2="{y(value):.1f}"/>')
        svg.append(f'<text x="{_PAD_L - 8}" y="{y(value) + 4:.1f}" text-anchor="end">'
                   f"{escape(_money(value, currency))}</text>")
    label_every = max(1, math.ceil(len(days) / 8))
    for index in range(0, len(days), label_every):
        svg.append(f'<text x="{x(index):.1f}" y="{_CHART_H - _PAD_B + 18}" text-anchor="middle">'
                   f"{escape(days[index][5:] or days[index])}</text>")
    for n, (name, values) in enumerate(series):
        colour = SERIES_COLOURS[n % len(SERIES_COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        svg.append(f'<polyline class="series" stroke="{colour}" points="{points}">'
                   f"<title>{escape(name)}</title></polyline>")
    index_of = {day: i for i, day in enumerate(days)}
    lines: dict[str, list[float]] = dict(series)
    for n, anomaly in enumerate(anomalies, 1):
        day = index_of.get(_text(anomaly.get("start_day"), 40))
        if day is None:
            continue
        line = lines.get(_text(anomaly.get("service"), 200))
        value = line[day] if line is not None else 0.0
        cx, cy = x(day), y(value)
        label = f"{n}. {_KINDS.get(_text(anomaly.get('kind'), 40), 'Anomaly')}: {_text(anomaly.get('service'), 200)}"
        svg.append(f'<line class="mark-line" x1="{cx:.1f}" x2="{cx:.1f}" y1="{_PAD_T}" y2="{_PAD_T + plot_h}"/>')
        svg.append(f'<circle class="marker" data-anomaly="{n}" cx="{cx:.1f}" cy="{cy:.1f}" r="7">'
                   f"<title>{escape(label)}</title></circle>")
        svg.append(f'<text class="mark-label" x="{cx + 9:.1f}" y="{max(_PAD_T + 12, cy - 9):.1f}">{n}</text>')
    svg.append("</svg>")
    legend = ['<ul class="legend">']
    for n, (name, _) in enumerate(series):
        legend.append(f'<li><i style="background:{SERIES_COLOURS[n % len(SERIES_COLOURS)]}"></i>{escape(name)}</li>')
    legend.append(f'<li><i style="background:{ANOMALY_COLOUR};border-radius:50%"></i>anomaly (numbered as below)</li>')
    legend.append("</ul>")
    return "<figure>" + "".join(svg) + "".join(legend) + "</figure>"


def _nice_ceiling(value: float) -> float:
    magnitude = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * magnitude:
            return float(factor * magnitude)
    return 10.0 * magnitude


def _anomalies(anomalies: Sequence[Mapping[str, Any]], currency: str) -> str:
    if not anomalies:
        return '<p class="empty">No anomalies: nothing deviated from its usual daily cost.</p>'
    rows = ['<table><thead><tr><th>#</th><th>Kind</th><th>Service</th><th>Account</th><th>Day(s)</th>'
            '<th class="num">Observed/day</th><th class="num">Expected/day</th><th class="num">Excess</th>'
            "</tr></thead><tbody>"]
    for n, a in enumerate(anomalies, 1):
        start, end = _text(a.get("start_day"), 40), _text(a.get("end_day"), 40)
        account = _text(a.get("sub_account_name"), 200) or _text(a.get("sub_account"), 200) or "—"
        rows.append(
            f'<tr><td><span class="badge">{n}</span></td>'
            f'<td>{escape(_KINDS.get(_text(a.get("kind"), 40), "Anomaly"))}</td>'
            f'<td>{escape(_text(a.get("service"), 200))}</td><td>{escape(account)}</td>'
            f"<td>{escape(start if start == end or not end else f'{start} to {end}')}</td>"
            f'<td class="num">{escape(_money(a.get("observed_usd"), currency))}</td>'
            f'<td class="num">{escape(_money(a.get("expected_usd"), currency))}</td>'
            f'<td class="num">{escape(_money(a.get("excess_cost_usd"), currency))}</td></tr>'
        )
    rows.append("</tbody></table><h3>What happened</h3><ol class=\"explain\">")
    rows += [f"<li>{escape(_text(a.get('explanation')))}</li>" for a in anomalies]
    rows.append("</ol>")
    return "".join(rows)


def _recommendations(recommendations: Sequence[Mapping[str, Any]], currency: str) -> str:
    if not recommendations:
        return '<p class="empty">No recommendations: nothing idle, oversized, uncommitted or untagged.</p>'
    rows = ['<table><thead><tr><th>#</th><th>Recommendation</th><th class="num">Est. savings/month</th>'
            "<th>Proposed action</th><th>Risk</th></tr></thead><tbody>"]
    for n, rec in enumerate(recommendations, 1):
        proposal = _mapping(rec.get("proposal"))
        rows.append(
            f"<tr><td>{n}</td><td><b>{escape(_text(rec.get('title'), 300))}</b><br>"
            f"{escape(_text(rec.get('detail')))}</td>"
            f'<td class="num">{escape(_money(rec.get("estimated_monthly_savings_usd"), currency))}</td>'
            f"<td><code>{escape(_text(proposal.get('action'), 100))}</code> (needs approval)</td>"
            f"<td>{escape(_text(proposal.get('risk'), 40))}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)
