"""The report page renders whatever an agent wrote without trusting it (issue 19, item 4)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.runs import RunOut, render_report_page

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _run(outputs: Any, status: str = "succeeded") -> RunOut:
    return RunOut(id="run_1", org_id="org_1", agent_id="agt_1", deployment_id="dep_1", version="1.0.0",
                  status=status, inputs={}, outputs=outputs, attempt=1, max_attempts=3, cancel_requested=False,
                  created_by="usr_1", created_at=NOW, updated_at=NOW, started_at=NOW, finished_at=NOW)


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def test_hostile_text_is_escaped_and_wrong_types_are_skipped() -> None:
    outputs = {
        "currency": "USD", "summary": {"excess_cost_usd": "lots", "estimated_monthly_savings_usd": float("nan")},
        "period": {"start": "2024-09-01", "end": "2024-09-03"}, "totals": [],
        "daily_spend": {"days": ["2024-09-01", "2024-09-02", "2024-09-03"],
                        "series": [{"service": HOSTILE, "values": [1, "2", None]}, "junk", {"values": [1]}]},
        "anomalies": [{"kind": "spike", "service": HOSTILE, "start_day": "2024-09-02", "explanation": HOSTILE},
                      42, {"kind": HOSTILE, "start_day": 5}],
        "recommendations": [{"title": HOSTILE, "detail": HOSTILE, "estimated_monthly_savings_usd": 12.5,
                             "proposal": {"action": HOSTILE, "risk": "low"}}, None],
    }
    html = render_report_page(_run(outputs))
    assert "<script" not in html and "<img" not in html and "onerror=alert" not in html.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count('class="marker"') == 1 and "$12.50" in html


def test_other_outputs_and_unfinished_runs_get_a_plain_page() -> None:
    html = render_report_page(_run({"answer": HOSTILE}))
    assert "Run report" in html and "&lt;script&gt;" in html and "<script" not in html
    waiting = render_report_page(_run(None, status="running"))
    assert "no outputs yet" in waiting and "running" in waiting
