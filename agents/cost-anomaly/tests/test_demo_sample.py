"""The demo export a first run reads with no config: the agent finds every documented problem in it,
and nothing in the same month without them (issue 19, item 2)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import jsonschema
import pytest
import yaml
from langchain_core.runnables import RunnableConfig

from cost_anomaly import tools
from cost_anomaly.focus import DEMO_ANOMALIES, DEMO_CSV, SAMPLE_CSV, read_focus_file
from cost_anomaly.graph import CostAnomalyState, build_graph

PROJECT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_load("focus_gen")
demo_sample = _load("demo_sample")


class _Context:
    """A minimal AgentContext: the graph's tools run in-process with the billing:read grant."""

    def __init__(self, config: Mapping[str, object]) -> None:
        self._config = dict(config)
        self.tool_calls: list[dict[str, object]] = []

    def log(self, step: str, message: str, **fields: object) -> None:
        json.dumps(fields)

    def call_tool(self, name: str, **arguments: object) -> object:
        self.tool_calls.append(arguments)
        return tools.TOOLS[name].func(**arguments)

    @property
    def config(self) -> Mapping[str, object]:
        return self._config

    @property
    def inputs(self) -> Mapping[str, object]:
        return {"lookback_days": 30, "currency": "USD"}

    def count_records(self, n: int) -> None:
        pass


def _run(config: Mapping[str, object]) -> tuple[dict[str, Any], _Context]:
    context = _Context(config)
    run_config: RunnableConfig = {"configurable": {"agent": context, "thread_id": "demo"}}
    state = build_graph().compile().invoke(CostAnomalyState(), config=run_config)
    return cast(dict[str, Any], state["outputs"]), context


def _documented() -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], json.loads(DEMO_ANOMALIES.read_text(encoding="utf-8")))


def test_the_demo_is_the_documented_derivation_of_the_real_sample(tmp_path: Path) -> None:
    # Regenerated from focus_sample.csv by the documented script, byte for byte: nothing hand-edited.
    out = tmp_path / "demo.csv"
    assert demo_sample.build(out) == _documented()
    assert out.read_bytes() == DEMO_CSV.read_bytes()
    sample = read_focus_file(SAMPLE_CSV)
    demo = read_focus_file(DEMO_CSV)
    assert len(demo) == demo_sample.ROWS
    assert {r.service for r in demo} <= {r.service for r in sample}
    assert DEMO_CSV.read_text(encoding="utf-8").splitlines()[0] == SAMPLE_CSV.read_text(encoding="utf-8").splitlines()[0]
    attribution = (DEMO_CSV.parent / "README.md").read_text(encoding="utf-8")
    assert "demo_focus.csv" in attribution and "CC BY 4.0" in attribution and "FinOps Foundation" in attribution


def test_the_demo_documents_a_spike_a_new_service_a_step_change_and_an_idle_resource() -> None:
    kinds = {(item["found_as"], item["kind"]) for item in _documented()}
    assert kinds == {("anomaly", "spike"), ("anomaly", "new_service"), ("anomaly", "step_change"),
                     ("recommendation", "idle_resource")}


def test_with_no_config_the_agent_finds_every_documented_problem_and_explains_it() -> None:
    outputs, context = _run({})
    assert context.tool_calls == [{"source": str(DEMO_CSV)}]  # no billing_source: the demo export
    documented = _documented()
    expected = {(d["kind"], d["provider"], d["sub_account"], d["service"], d["start_day"])
                for d in documented if d["found_as"] == "anomaly"}
    found = {(a["kind"], a["provider"], a["sub_account"], a["service"], a["start_day"]) for a in outputs["anomalies"]}
    assert found == expected  # every documented anomaly, and nothing else
    for anomaly in outputs["anomalies"]:
        assert anomaly["service"] in anomaly["explanation"] and anomaly["explanation"] in outputs["report_markdown"]
        assert anomaly["excess_cost_usd"] > 0
    [idle] = [d for d in documented if d["found_as"] == "recommendation"]
    stops = [r for r in outputs["recommendations"] if r["kind"] == "idle_resource"]
    assert [(r["resource_id"], r["service"]) for r in stops] == [(idle["resource_id"], idle["service"])]
    assert stops[0]["estimated_monthly_savings_usd"] > 10
    assert stops[0]["proposal"]["action"] == "stop_resource"
    assert "no recorded usage" in stops[0]["detail"]
    assert outputs["summary"]["anomaly_count"] == 3


def test_nothing_is_found_in_a_clean_copy_of_the_demo(tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"
    demo_sample.build(clean, clean=True)
    assert clean.read_bytes() != DEMO_CSV.read_bytes()
    outputs, _ = _run({"billing_source": str(clean)})
    assert outputs["anomalies"] == []
    assert not [r for r in outputs["recommendations"] if r["kind"] in ("idle_resource", "underused_resource")]
    assert "**No anomalies** detected." in outputs["report_markdown"]


def test_installing_needs_no_config() -> None:
    manifest = yaml.safe_load((PROJECT / "manifest.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(manifest["config"]).validate({})
    assert "billing_source" not in manifest["config"].get("required", [])


@pytest.mark.parametrize("config", [{"billing_source": ""}, {"billing_source": 5}])
def test_a_bad_billing_source_is_still_refused(config: dict[str, object]) -> None:
    manifest = yaml.safe_load((PROJECT / "manifest.yaml").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft202012Validator(manifest["config"]).iter_errors(config))
