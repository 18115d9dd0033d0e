"""The built-in cost-anomaly agent: FOCUS reader, detector, recommender, report and LangGraph graph.

Inputs are the real FOCUS 1.0 sample (FinOps Foundation, CC BY 4.0) and files generated from it by
``tests/focus_gen.py`` (same columns and value shapes) with anomalies injected at known places.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import importlib.util
import json
import re
import statistics
import sys
import tomllib
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import jsonschema
import pytest
import yaml
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from support.http import Recorded, RecordingServer, Reply

from cost_anomaly import tools
from cost_anomaly.detect import (
    CostSeries,
    DetectionSettings,
    SeriesKey,
    build_series,
    detect_anomalies,
)
from cost_anomaly.focus import (
    SAMPLE_CSV,
    DailyCostTable,
    FocusFormatError,
    FocusRecord,
    FocusSourceError,
    iter_focus,
    read_focus_file,
    records_from_columns,
    records_to_columns,
    rollup_daily,
    shown_url,
)
from cost_anomaly.graph import NODES, CostAnomalyState, RunOptions, build_graph
from cost_anomaly.recommend import (
    DAYS_PER_MONTH,
    REMEDIATION_TOOL,
    RecommendationSettings,
    recommend,
)
from cost_anomaly.report import build_output
from runtime.agent_context import AgentContext
from shared.kernel.net import free_port


def _load_generator() -> ModuleType:
    # A script beside this test (benchmarks run it too); loaded by path, whatever pytest's import mode.
    path = Path(__file__).with_name("focus_gen.py")
    spec = importlib.util.spec_from_file_location("focus_gen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["focus_gen"] = module
    spec.loader.exec_module(module)
    return module


focus_gen = _load_generator()
PROJECT = Path(__file__).resolve().parents[1]  # the agent project: manifest.yaml, sample-input.json
MANIFEST = PROJECT / "manifest.yaml"

SEPTEMBER = [date(2024, 9, 1) + timedelta(days=i) for i in range(30)]
KINDS = {"spike": "spike", "drop": "drop", "step": "step_change", "new_service": "new_service"}


# --------------------------------------------------------------------------------------------
# An in-test AgentContext: the platform's side of the port, with a permission-checking registry


class RecordingContext:
    """Runs tools from ``TOOLS`` if their permissions were granted; records logs, calls, counts."""

    def __init__(
        self,
        config: Mapping[str, object],
        inputs: Mapping[str, object] | None = None,
        granted: frozenset[str] = frozenset({"billing:read"}),
    ) -> None:
        self._config = dict(config)
        self._inputs = dict(inputs or {})
        self.granted = granted
        self.logs: list[tuple[str, str, dict[str, object]]] = []
        self.tool_calls: list[tuple[str, dict[str, object]]] = []
        self.records = 0

    def log(self, step: str, message: str, **fields: object) -> None:
        json.dumps(fields)  # log fields travel as JSON: fail here if one is not
        self.logs.append((step, message, fields))

    def call_tool(self, name: str, **arguments: object) -> object:
        self.tool_calls.append((name, arguments))
        spec = tools.TOOLS[name]
        missing = spec.permissions - self.granted
        if missing:
            raise PermissionError(f"{name} needs {', '.join(sorted(missing))}")
        return spec.func(**arguments)

    @property
    def config(self) -> Mapping[str, object]:
        return self._config

    @property
    def inputs(self) -> Mapping[str, object]:
        return self._inputs

    def count_records(self, n: int) -> None:
        self.records += n


def run_graph(context: RecordingContext) -> dict[str, Any]:
    config: RunnableConfig = {"configurable": {"agent": context, "thread_id": "run-1"}}
    return cast(dict[str, Any], build_graph().compile().invoke(CostAnomalyState(), config=config))


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def sample() -> list[FocusRecord]:
    return read_focus_file(SAMPLE_CSV)


@pytest.fixture(scope="module")
def injected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """20,000 generated rows (quiet weekends) with a spike, a drop, a step and a new service."""
    path = tmp_path_factory.mktemp("focus") / "injected.csv"
    injection = focus_gen.Injection
    result = focus_gen.generate(
        path, 20_000, seed=1, hours_per_day=4, weekend_factor=0.7,
        injections=[
            injection("spike", date(2024, 9, 17), factor=6.0),
            injection("drop", date(2024, 9, 11), factor=0.05),
            injection("step", date(2024, 9, 20), factor=2.0),
            injection("new_service", date(2024, 9, 24), daily_cost_usd=400.0),
        ],
    )
    return path, result


@pytest.fixture(scope="module")
def injected_table(injected: tuple[Path, Any]) -> DailyCostTable:
    return rollup_daily(iter_focus(injected[0]))


# --------------------------------------------------------------------------------------------
# Reader


def test_reads_the_real_sample(sample: list[FocusRecord]) -> None:
    assert len(sample) == 1000
    assert {r.provider for r in sample} == {"AWS", "Microsoft", "Oracle"}
    assert min(r.day for r in sample) == date(2024, 9, 1)
    assert max(r.day for r in sample) == date(2024, 9, 30)
    first = sample[0]
    assert first.service == "Amazon Simple Queue Service"
    assert first.commitment_discount_id is None  # NULL literal
    assert first.tags is None
    assert first.billed_cost == pytest.approx(8e-7)
    assert sample[1].tags == {"application": "BrightLensMatrix", "environment": "dev", "business_unit": "ViennaAI"}
    oracle = next(r for r in sample if r.provider == "Oracle")
    assert oracle.region == "us-sanjose-1"  # RegionId NULL: falls back to RegionName
    assert oracle.pricing_category is None  # empty quoted string, Oracle's way of writing NULL
    credit = next(r for r in sample if r.charge_category == "Credit")
    assert credit.billed_cost < 0
    assert credit.consumed_quantity is None
    # The total matches an independent sum over the raw file.
    with SAMPLE_CSV.open(encoding="utf-8", newline="") as handle:
        raw_total = sum(float(row["BilledCost"]) for row in csv.DictReader(handle))
    assert sum(r.billed_cost for r in sample) == pytest.approx(raw_total)


def test_path_and_file_url_read_the_same(sample: list[FocusRecord]) -> None:
    assert read_focus_file(SAMPLE_CSV.as_uri()) == sample


def _broken_copy(tmp_path: Path, row: int, column: str, value: str) -> Path:
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    header = lines[0].replace('"', "").split(",")
    cells = next(csv.reader([lines[row - 1]]))
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(f'"{c}"' if c != "NULL" else c for c in (x.replace('"', '""') for x in cells))
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("row", "column", "value", "message"),
    [
        (5, "BilledCost", "12,5", "is not a number"),
        (17, "ChargePeriodStart", "yesterday", "is not an ISO 8601 timestamp"),
        (300, "Tags", "{not json", "Tags is not valid JSON"),
        (999, "ProviderName", "NULL", "required but NULL"),
        (2, "EffectiveCost", "inf", "not a finite number"),
    ],
)
def test_broken_values_name_their_row_and_column(
    tmp_path: Path, row: int, column: str, value: str, message: str
) -> None:
    path = _broken_copy(tmp_path, row, column, value)
    with pytest.raises(FocusFormatError, match=message) as caught:
        read_focus_file(path)
    assert caught.value.row == row
    assert caught.value.column == column
    assert f"row {row}" in str(caught.value)


def test_missing_required_column_is_reported_on_the_header(tmp_path: Path) -> None:
    text = SAMPLE_CSV.read_text(encoding="utf-8").replace('"BilledCost"', '"Billed"', 1)
    path = tmp_path / "nobilled.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FocusFormatError, match=r"missing required column.*BilledCost") as caught:
        read_focus_file(path)
    assert caught.value.row == 1


def test_ragged_row_and_empty_file(tmp_path: Path) -> None:
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    lines[3] += ',"extra"'
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(FocusFormatError, match="expected 44 fields, found 45") as caught:
        read_focus_file(ragged)
    assert caught.value.row == 4
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(FocusFormatError, match="empty"):
        read_focus_file(empty)


def _serve_sample_folder(request: Recorded) -> Reply:
    path = SAMPLE_CSV.parent / request.path.lstrip("/")
    if not path.is_file():
        return Reply(404, b"not found")
    return Reply(200, path.read_bytes(), {"Content-Type": "text/csv"})


@pytest.fixture
def http_server() -> Iterator[str]:
    with RecordingServer(_serve_sample_folder) as server:
        yield server.url


def test_http_source_is_streamed_with_a_size_cap(http_server: str, sample: list[FocusRecord]) -> None:
    url = f"{http_server}/focus_sample.csv"
    assert read_focus_file(url, timeout=5) == sample
    with pytest.raises(FocusSourceError, match="limit"):
        read_focus_file(url, max_bytes=10_000, timeout=5)
    with pytest.raises(FocusSourceError, match="cannot fetch"):
        read_focus_file(f"{http_server}/missing.csv", timeout=5)


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(FocusSourceError, match="unsupported"):
        read_focus_file("ftp://example.com/focus.csv")


def test_records_and_daily_table_survive_json(sample: list[FocusRecord]) -> None:
    columns = json.loads(json.dumps(records_to_columns(sample)))
    assert list(records_from_columns(columns)) == sample
    table = rollup_daily(sample)
    assert DailyCostTable.from_json(json.loads(json.dumps(table.to_json()))) == table
    assert table.total_cost("billed_cost") == pytest.approx(sum(r.billed_cost for r in sample))
    assert table.days == tuple(SEPTEMBER)
    columns["billed_cost"][3] = "free"
    with pytest.raises(ValueError, match="billed_cost"):
        list(records_from_columns(columns))


# --------------------------------------------------------------------------------------------
# Detection


def test_finds_each_injected_anomaly_with_kind_key_and_day(injected: tuple[Path, Any], injected_table: DailyCostTable) -> None:
    _, result = injected
    found = detect_anomalies(build_series(injected_table), injected_table.days)
    assert len(found) == len(result.injected) == 4  # every injected anomaly, and nothing else
    for truth in result.injected:
        key = SeriesKey(truth.provider, truth.billing_account, truth.sub_account, truth.service)
        [hit] = [a for a in found if a.key == key]
        assert hit.kind == KINDS[truth.kind]
        assert hit.start_day == truth.start_day
        assert hit.end_day == truth.end_day
        assert truth.service in hit.explanation
        assert truth.sub_account in hit.explanation
        assert truth.start_day.isoformat() in hit.explanation
    by_kind = {a.kind: a for a in found}
    spike = by_kind["spike"]
    assert re.fullmatch(
        r".+ in AWS account .+ cost \$[\d,]+\.\d\d on 2024-09-17, \d+\.\d\u00d7 its typical \$[\d,]+\.\d\d "
        r"\(robust z = \d+\.\d\)",
        spike.explanation,
    ), spike.explanation
    assert spike.observed_usd / spike.expected_usd > 3
    assert spike.excess_cost_usd == pytest.approx(spike.observed_usd - spike.expected_usd)
    step = by_kind["step_change"]
    assert step.observed_usd == pytest.approx(2 * step.expected_usd, rel=0.1)
    assert step.excess_cost_usd > 0
    assert "moved from" in step.explanation
    assert by_kind["drop"].excess_cost_usd < 0
    assert "below its typical" in by_kind["drop"].explanation
    new = by_kind["new_service"]
    assert new.expected_usd == 0
    assert new.observed_usd == pytest.approx(400, rel=0.1)
    assert "is new" in new.explanation
    # Largest money first.
    assert [abs(a.excess_cost_usd) for a in found] == sorted((abs(a.excess_cost_usd) for a in found), reverse=True)


@pytest.mark.parametrize(("seed", "weekend_factor"), [(0, 1.0), (2, 0.6), (4, 1.0)])
def test_clean_generated_baseline_has_at_most_two_anomalies(tmp_path: Path, seed: int, weekend_factor: float) -> None:
    # Bound: <= 2 false positives per 12,000-row month (0 measured for these seeds).
    path = tmp_path / "clean.csv"
    focus_gen.generate(path, 12_000, seed=seed, hours_per_day=4, weekend_factor=weekend_factor)
    table = rollup_daily(iter_focus(path))
    for sensitivity in (3.0, "high"):
        found = detect_anomalies(build_series(table), table.days, DetectionSettings.for_sensitivity(sensitivity))
        assert len(found) <= 2, [a.explanation for a in found]


def test_real_sample_does_not_flood(sample: list[FocusRecord]) -> None:
    # Bound: <= 2 (0 measured): the sample's series are sparse, sub-dollar hourly extracts.
    table = rollup_daily(sample)
    for sensitivity in ("low", "medium", "high", 3.0):
        found = detect_anomalies(build_series(table), table.days, DetectionSettings.for_sensitivity(sensitivity))
        assert len(found) <= 2, [a.explanation for a in found]


def _series(values: list[float], service: str = "Amazon Elastic Compute Cloud") -> CostSeries:
    return CostSeries(SeriesKey("AWS", "1234567890123", "11353890204", service), "Atlas Orion", "Compute", tuple(values))


def _weekly(days: list[date], weekday: float, weekend: float) -> list[float]:
    # Deterministic +-2 % wobble so the MAD is not zero.
    return [(weekend if d.weekday() >= 5 else weekday) * (1 + 0.02 * ((i * 7) % 5 - 2) / 2) for i, d in enumerate(days)]


def test_weekly_seasonality_is_learned_with_three_weeks_of_history() -> None:
    days = [date(2024, 8, 5) + timedelta(days=i) for i in range(35)]
    values = _weekly(days, 100.0, 35.0)
    assert detect_anomalies([_series(values)], days) == []  # quiet weekends are not drops
    spiky = list(values)
    spiky[16] = 310.0  # a Wednesday
    weekend_spike = list(values)
    weekend_spike[26] = 100.0  # a Saturday at weekday level: nearly 3x its usual weekend cost
    [spike] = detect_anomalies([_series(spiky)], days)
    assert (spike.kind, spike.start_day) == ("spike", days[16])
    [weekend] = detect_anomalies([_series(weekend_spike)], days)
    assert (weekend.kind, weekend.start_day) == ("spike", days[26])
    assert weekend.expected_usd == pytest.approx(35, rel=0.05)


def test_cents_level_noise_is_never_flagged() -> None:
    values = [0.01, 0.5, 0.0, 0.02, 1.9, 0.03, 0.01] * 4 + [3.5, 0.0]
    assert detect_anomalies([_series(values)], SEPTEMBER) == []


def test_step_down_and_sensitivity() -> None:
    down = [80.0 + (i % 3) for i in range(18)] + [40.0 + (i % 3) for i in range(12)]
    [step] = detect_anomalies([_series(down)], SEPTEMBER)
    assert (step.kind, step.start_day) == ("step_change", SEPTEMBER[18])
    assert step.excess_cost_usd == pytest.approx(-40 * 12, rel=0.05)
    assert step.score < 0
    moderate = [50.0 + (i % 3) for i in range(30)]
    moderate[12] = 80.0  # +60 %
    assert detect_anomalies([_series(moderate)], SEPTEMBER, DetectionSettings.for_sensitivity("low")) == []
    [found] = detect_anomalies([_series(moderate)], SEPTEMBER, DetectionSettings.for_sensitivity("high"))
    assert found.start_day == SEPTEMBER[12]
    with pytest.raises(ValueError, match="sensitivity"):
        DetectionSettings.for_sensitivity("extreme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        DetectionSettings.for_sensitivity(-1.0)


def test_consecutive_spike_days_are_one_anomaly() -> None:
    values = [100.0 + (i % 4) for i in range(30)]
    values[9] = values[10] = 420.0
    [run] = detect_anomalies([_series(values)], SEPTEMBER)
    assert (run.kind, run.start_day, run.end_day, run.days) == ("spike", SEPTEMBER[9], SEPTEMBER[10], 2)
    assert run.excess_cost_usd == pytest.approx(2 * 420 - 2 * statistics.median(values), rel=0.02)
    assert "(2 days)" in run.explanation


# --------------------------------------------------------------------------------------------
# Recommendations


def _daily(template: FocusRecord, *, days: list[date], **fields: Any) -> list[FocusRecord]:
    """One record per day shaped like a real sample row; callables in ``fields`` get the day index."""
    rows = []
    for i, day in enumerate(days):
        values = {name: value(i) if callable(value) else value for name, value in fields.items()}
        rows.append(dataclasses.replace(template, day=day, **values))
    return rows


@pytest.fixture(scope="module")
def portfolio(sample: list[FocusRecord]) -> list[FocusRecord]:
    """Hand-built month: EC2 peers, an oversized instance, an idle volume, an underused table,
    committed EC2 elsewhere, steady DynamoDB spend without commitment, and an untagged account."""
    instance = next(r for r in sample if r.unit == "Hours" and r.resource_type == "instance" and r.tags)
    tags = {"application": "Checkout", "environment": "prod", "business_unit": "Retail"}
    records: list[FocusRecord] = []

    def hourly(resource: str, rate: float, sub: str, **extra: Any) -> None:
        fields = {
            "resource_id": resource, "sub_account": sub, "sub_account_name": None, "billed_cost": rate * 24,
            "consumed_quantity": 24.0, "pricing_category": "Standard", "commitment_discount_id": None,
            "tags": tags, **extra,
        }
        records.extend(_daily(instance, days=SEPTEMBER, **fields))

    for k in range(4):
        hourly(f"i-peer-{k}", 0.10, "111111111111")
    hourly("i-big", 0.80, "111111111111")
    hourly("i-untagged", 0.10, "333333333333", tags=None)
    hourly("i-committed", 0.10, "222222222222", billed_cost=0.0, pricing_category="Committed",
           commitment_discount_id="arn:aws:savingsplans::222222222222:savingsplan/abc")
    records += _daily(
        instance, days=SEPTEMBER, resource_id="vol-idle", resource_type="volume", unit="GB-Months",
        sub_account="111111111111", billed_cost=3.0, consumed_quantity=0.0, tags=tags,
    )
    records += _daily(
        instance, days=SEPTEMBER, resource_id="table-orders", resource_type=None, unit="WriteCapacityUnit-Hours",
        service="Amazon DynamoDB", service_category="Databases", sub_account="111111111111", billed_cost=10.0,
        consumed_quantity=lambda i: 100.0 if i < 23 else 5.0, tags=tags,
    )
    return records


def test_recommendations_estimate_savings_and_propose_actions(portfolio: list[FocusRecord]) -> None:
    table = rollup_daily(portfolio)
    found = recommend(table)
    kinds = [r.kind for r in found]
    assert kinds == [
        "oversized_resource", "underused_resource", "commitment_coverage", "idle_resource",
        "commitment_coverage", "untagged_spend",
    ]
    by_target = {(r.kind, r.resource_id or r.service or r.sub_account): r for r in found}
    oversized = by_target["oversized_resource", "i-big"]
    # $0.80/h against a $0.10/h peer median: one size down is $0.40/h, 24 h a day.
    assert oversized.estimated_monthly_savings_usd == pytest.approx(0.40 * 24 * DAYS_PER_MONTH)
    assert oversized.proposal["action"] == "rightsize"
    underused = by_target["underused_resource", "table-orders"]
    # 5 % of peak usage: 1/8 of the capacity keeps 2x headroom, so 7/8 of $10/day is saved.
    assert underused.estimated_monthly_savings_usd == pytest.approx(10 * 7 / 8 * DAYS_PER_MONTH)
    assert underused.proposal["arguments"]["target_capacity_fraction"] == 0.125
    idle = by_target["idle_resource", "vol-idle"]
    assert idle.estimated_monthly_savings_usd == pytest.approx(3 * DAYS_PER_MONTH)
    assert (idle.proposal["action"], idle.proposal["risk"]) == ("stop_resource", "low")
    ec2 = by_target["commitment_coverage", "Amazon Elastic Compute Cloud"]
    on_demand = 4 * 2.4 + 19.2 + 2.4 + 3.0  # peers, big, untagged, idle volume
    assert ec2.estimated_monthly_savings_usd == pytest.approx(on_demand * 0.25 * DAYS_PER_MONTH)
    assert ec2.proposal["risk"] == "medium"  # the org already commits for EC2 elsewhere
    assert ec2.proposal["arguments"]["hourly_commitment_usd"] == pytest.approx(on_demand / 24, abs=0.01)
    dynamo = by_target["commitment_coverage", "Amazon DynamoDB"]
    assert dynamo.proposal["risk"] == "high"  # no commitment anywhere for this service
    untagged = by_target["untagged_spend", "333333333333"]
    assert untagged.estimated_monthly_savings_usd == 0
    assert untagged.monthly_cost_usd == pytest.approx(2.4 * DAYS_PER_MONTH)
    assert "100% of the resource spend" in untagged.detail
    assert untagged.proposal["action"] == "tag_resources"
    assert untagged.proposal["arguments"] == {
        "resource_ids": ["i-untagged"], "required_tag_keys": ["application", "business_unit", "environment"],
    }
    for rec in found:
        proposal = rec.proposal
        assert set(proposal) == {
            "action_id", "tool", "action", "target", "arguments", "estimated_monthly_savings_usd", "risk",
            "requires_approval",
        }
        assert proposal["tool"] == REMEDIATION_TOOL
        assert proposal["requires_approval"] is True
        assert proposal["estimated_monthly_savings_usd"] == round(rec.estimated_monthly_savings_usd, 2)
        assert re.fullmatch(r"act_[0-9a-f]{24}", proposal["action_id"])
    # Stable: the same data proposes the same actions; different actions never share an id.
    assert [r.proposal["action_id"] for r in recommend(rollup_daily(portfolio))] == [
        r.proposal["action_id"] for r in found
    ]
    assert len({r.proposal["action_id"] for r in found}) == len(found)
    json.dumps([r.to_dict() for r in found])


def test_untagged_spend_on_the_real_sample(sample: list[FocusRecord]) -> None:
    table = rollup_daily(sample)
    # The sample's spend is cents; lower the floors to see its tagging hygiene.
    found = recommend(table, settings=RecommendationSettings(min_monthly_savings_usd=0.01, untagged_min_monthly_usd=0.01))
    untagged = [r for r in found if r.kind == "untagged_spend"]
    assert untagged
    assert all(r.proposal["arguments"]["resource_ids"] for r in untagged)


# --------------------------------------------------------------------------------------------
# Report and graph


def test_report_renders_anomalies_and_recommendations(injected_table: DailyCostTable, portfolio: list[FocusRecord]) -> None:
    found = detect_anomalies(build_series(injected_table), injected_table.days)
    recs = recommend(rollup_daily(portfolio))
    output = build_output(
        injected_table, [a.to_dict() for a in found], [r.to_dict() for r in recs], metric="billed_cost",
        detection=DetectionSettings(),
    )
    text = output["report_markdown"]
    assert text.startswith("# Cost anomaly report")
    assert "**4 anomalies** (1 drop, 1 new service, 1 spike, 1 step change)" in text
    assert "| 1 | new service |" in text
    for anomaly in found:
        assert anomaly.explanation in text
    assert "`rightsize`" in text
    assert output["summary"]["proposal_count"] == len(recs) == len(output["proposals"])
    assert output["summary"]["estimated_monthly_savings_usd"] == pytest.approx(
        sum(r.estimated_monthly_savings_usd for r in recs), abs=0.01
    )
    assert output["period"] == {"start": "2024-09-01", "end": "2024-09-30", "days": 30}
    json.dumps(output)


def test_graph_runs_end_to_end_with_the_documented_log_steps(injected: tuple[Path, Any]) -> None:
    path, result = injected
    context = RecordingContext({"billing_source": str(path)})
    assert isinstance(context, AgentContext)
    state = run_graph(context)
    outputs = state["outputs"]
    assert state["billing"] is None  # raw records do not outlive normalization
    assert context.tool_calls == [("billing.read_focus", {"source": str(path)})]
    assert context.records == 20_000
    anomalies, recommendations = outputs["anomalies"], outputs["recommendations"]
    assert {(a["kind"], a["start_day"]) for a in anomalies} == {
        (KINDS[t.kind], t.start_day.isoformat()) for t in result.injected
    }
    assert recommendations
    assert all(p["requires_approval"] for p in outputs["proposals"])
    assert "# Cost anomaly report" in outputs["report_markdown"]
    assert [(step, message) for step, message, _ in context.logs] == [
        ("fetch_billing_data", "Fetching billing data"),
        ("fetch_billing_data", "Fetched 20000 records"),
        ("normalize", "Normalizing records"),
        ("normalize", "Normalization complete"),
        ("detect_anomalies", "Analyzing patterns"),
        ("detect_anomalies", "Detected 4 anomalies"),
        ("generate_recommendations", "Generating recommendations"),
        ("generate_recommendations", f"{len(recommendations)} recommendations generated"),
        ("report", "Writing report"),
        ("report", "Report complete"),
    ]
    assert str(path) not in json.dumps([fields for _, _, fields in context.logs])  # sources may carry secrets
    json.dumps(outputs)


def test_every_checkpoint_is_json(sample: list[FocusRecord]) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver())
    context = RecordingContext({"billing_source": str(SAMPLE_CSV), "sensitivity": "high"})
    config: RunnableConfig = {"configurable": {"agent": context, "thread_id": "run-2"}}
    final = graph.invoke(CostAnomalyState(), config=config)
    assert final["outputs"]["totals"]["records"] == len(sample)
    history = list(graph.get_state_history(config))
    assert [snapshot.next for snapshot in reversed(history)][1:] == [(node,) for node in NODES] + [()]
    for snapshot in history:
        json.dumps(snapshot.values)
    [fetched] = [snapshot for snapshot in history if snapshot.next == ("normalize",)]
    assert len(fetched.values["billing"]["day"]) == len(sample)  # columnar records, only until normalize
    assert history[0].values["billing"] is None


def test_graph_stops_when_the_tool_is_not_permitted() -> None:
    context = RecordingContext({"billing_source": str(SAMPLE_CSV)}, granted=frozenset())
    with pytest.raises(PermissionError, match="billing:read"):
        run_graph(context)
    assert [message for _, message, _ in context.logs] == ["Fetching billing data"]
    assert context.records == 0


def test_inputs_select_currency_and_lookback() -> None:
    week = RecordingContext({"billing_source": str(SAMPLE_CSV)}, {"lookback_days": 7})
    outputs = run_graph(week)["outputs"]
    assert outputs["period"] == {"start": "2024-09-24", "end": "2024-09-30", "days": 7}
    euros = RecordingContext({"billing_source": str(SAMPLE_CSV)}, {"currency": "EUR"})
    outputs = run_graph(euros)["outputs"]
    assert outputs["period"]["days"] == 0
    assert "no rows to analyse" in outputs["report_markdown"]
    [complete] = [fields for _, message, fields in euros.logs if message == "Normalization complete"]
    assert complete["skipped_other_currency"] == 1000


@pytest.mark.parametrize(
    ("config", "inputs", "message"),
    [
        ({"billing_source": ""}, {}, "billing_source"),
        ({"billing_source": "x.csv", "sensitivity": 0}, {}, "sensitivity"),
        ({"billing_source": "x.csv", "cost_metric": "list_cost"}, {}, "cost_metric"),
        ({"billing_source": "x.csv"}, {"lookback_days": "30"}, "lookback_days"),
        ({"billing_source": "x.csv"}, {"currency": "usd"}, "currency"),
    ],
)
def test_run_options_are_validated(config: dict[str, object], inputs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunOptions.from_agent(RecordingContext(config, inputs))


def test_graph_needs_an_agent_context() -> None:
    with pytest.raises(RuntimeError, match="AgentContext"):
        build_graph().compile().invoke(CostAnomalyState(), config={"configurable": {}})


def test_tools_mapping() -> None:
    spec = tools.TOOLS["billing.read_focus"]
    assert spec.permissions == frozenset({"billing:read"})
    func, permissions = spec  # a plain (callable, permissions) pair for the registry
    records = func(str(SAMPLE_CSV))
    assert isinstance(records, list)
    assert len(records) == 1000
    assert permissions == {"billing:read"}


def test_manifest_matches_the_code() -> None:
    # The manifest is written separately; its entrypoint and tool permissions must name this code.
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    module, _, name = manifest["runtime"]["entrypoint"].partition(":")
    assert getattr(importlib.import_module(module), name) is build_graph
    declared = {tool["name"]: set(tool["permissions"]) for tool in manifest["tools"]}
    for tool_name, spec in tools.TOOLS.items():
        assert declared[tool_name] == spec.permissions
    assert set(manifest["config"]["properties"]) <= {"billing_source", "sensitivity", "cost_metric", "min_cost_usd",
                                                     "remediation"}
    assert set(manifest["inputs"]["properties"]) <= {"lookback_days", "currency"}


def test_the_package_is_the_manifests_version_and_its_sample_input_runs() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == manifest["version"]
    inputs = json.loads((PROJECT / "sample-input.json").read_text(encoding="utf-8"))
    jsonschema.validate(inputs, manifest["inputs"])
    outputs = run_graph(RecordingContext({"billing_source": str(SAMPLE_CSV)}, inputs))["outputs"]
    assert outputs["period"] == {"start": "2024-09-01", "end": "2024-09-30", "days": 30}


# --------------------------------------------------------------------------------------------
# Generator


def test_generator_keeps_the_sample_shapes(tmp_path: Path) -> None:
    out = tmp_path / "gen.csv"
    truth = tmp_path / "truth.json"
    code = focus_gen.main([
        "--rows", "3001", "--out", str(out), "--hours-per-day", "2", "--spike", "2024-09-10:5", "--truth", str(truth),
    ])
    assert code == 0
    sample_lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == sample_lines[0]  # identical header
    assert len(lines) == 3002  # exactly --rows data rows
    records = read_focus_file(out)
    assert len({r.resource_id for r in records if r.resource_id}) > 10
    first = lines[1].split(",")
    assert re.fullmatch(r"-?\d+\.\d{11}", first[1])  # BilledCost: bare, 11 decimals like the sample
    assert re.fullmatch(r'"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"', first[12])  # ChargePeriodStart: quoted
    assert "NULL" in first  # missing values stay bare NULL literals
    [spike] = json.loads(truth.read_text(encoding="utf-8"))
    assert (spike["kind"], spike["start_day"]) == ("spike", "2024-09-10")


def test_a_failed_fetch_names_the_url_without_its_credentials() -> None:
    port = free_port()  # nothing listens here
    url = f"http://ops:hunter2@127.0.0.1:{port}/exports/focus.csv?X-Amz-Signature=0a1b2c&token=t0ps3cr3t#k=v"
    with pytest.raises(FocusSourceError) as failure:
        read_focus_file(url, timeout=5)
    message = str(failure.value)
    assert f"http://127.0.0.1:{port}/exports/focus.csv" in message
    assert not any(part in message for part in ("hunter2", "0a1b2c", "t0ps3cr3t", "X-Amz", "ops:"))
    assert shown_url(url) == f"http://127.0.0.1:{port}/exports/focus.csv"
