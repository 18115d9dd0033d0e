"""The executor on its own: the built-in agent with an in-process context, stops between steps,
failures and their classification, log batching, and which entrypoints may load."""

from __future__ import annotations

import copy
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.client import ControlPlaneError, LogLine
from runtime.executor import (
    AgentLoadError,
    BufferedRunLog,
    Executor,
    MemoryRunLog,
    RunSpec,
    StopReason,
    agent_tools,
    is_retryable,
    load_entrypoint,
)
from shared.kernel.net import free_port

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((ROOT / "agents/cost-anomaly/manifest.yaml").read_text())
SAMPLE = ROOT / "agents/cost-anomaly/cost_anomaly/data/focus_sample.csv"


def spec(**changes: Any) -> RunSpec:
    base: dict[str, Any] = {"run_id": "run_1", "manifest": MANIFEST, "config": {"billing_source": str(SAMPLE)},
                            "inputs": {}, "granted_permissions": ["billing:read", "compute:write"]}
    return RunSpec(**{**base, **changes})


def test_the_built_in_agent_runs_with_an_in_process_context():
    log = MemoryRunLog()
    outcome = Executor().execute(spec(inputs={"lookback_days": 7}), log=log)
    assert outcome.status == "succeeded" and outcome.error is None
    assert outcome.outputs["period"]["days"] == 7 and "report_markdown" in outcome.outputs
    metrics = outcome.report_metrics
    assert metrics["records_processed"] == 1000 and metrics["steps"] == 5 and metrics["tool_calls"] == 1
    assert isinstance(metrics["records_processed"], int) and metrics["cpu_seconds"] > 0
    assert [line.seq for line in log.lines] == list(range(1, 11))
    assert log.lines[1].message == "Fetched 1000 records" and log.lines[1].fields == {"records": 1000}


def test_a_stop_between_steps():
    seen = []

    def stop_after_two() -> StopReason | None:
        seen.append(1)
        return StopReason.CANCELLED if len(seen) == 2 else None

    log = MemoryRunLog()
    outcome = Executor().execute(spec(), log=log, should_stop=stop_after_two)
    assert outcome.status == "cancelled" and outcome.metrics["steps"] == 2 and outcome.outputs is None
    assert log.lines[-1].message == "Run cancelled between steps"
    shutdown = Executor().execute(spec(), log=MemoryRunLog(), should_stop=lambda: StopReason.SHUTDOWN)
    assert shutdown.status == "abandoned" and shutdown.stop_reason == StopReason.SHUTDOWN
    manifest = copy.deepcopy(MANIFEST)
    manifest["runtime"]["timeout_seconds"] = 1e-6
    late = Executor().execute(spec(manifest=manifest), log=MemoryRunLog())
    assert late.status == "failed" and late.error.startswith("timed out") and not late.retryable


def test_a_refused_tool_fails_the_step_without_retry():
    log = MemoryRunLog()
    outcome = Executor().execute(spec(granted_permissions=[]), log=log)
    assert outcome.status == "failed" and outcome.retryable is False
    assert outcome.error.startswith("ToolPermissionDenied: tool 'billing.read_focus' needs permission billing:read")
    refused = [line for line in log.lines if line.level == "error"]
    assert [line.step for line in refused] == ["fetch_billing_data", "fetch_billing_data"]
    assert refused[0].message.startswith("Tool call refused") and refused[1].message.startswith("Step failed")


def test_network_failures_are_retryable_and_bad_data_is_not(tmp_path: Path):
    unreachable = Executor().execute(spec(config={"billing_source": f"http://127.0.0.1:{free_port()}/x.csv"}),
                                     log=MemoryRunLog())
    assert unreachable.status == "failed" and unreachable.retryable is True
    broken = tmp_path / "broken.csv"
    broken.write_text("not,a,focus,file\n1,2,3,4\n")
    bad = Executor().execute(spec(config={"billing_source": str(broken)}), log=MemoryRunLog())
    assert bad.status == "failed" and bad.retryable is False


@pytest.mark.parametrize(("exc", "retryable"), [
    (ConnectionRefusedError(), True),
    (TimeoutError(), True),
    (urllib.error.URLError("down"), True),
    (urllib.error.HTTPError("u", 503, "busy", {}, None), True),  # type: ignore[arg-type]
    (urllib.error.HTTPError("u", 404, "gone", {}, None), False),  # type: ignore[arg-type]
    (ValueError("bad"), False),
    (ControlPlaneError(0, "unreachable", "x"), True),
    (ControlPlaneError(422, "validation_failed", "x"), False),
])
def test_retryable_classification(exc: BaseException, retryable: bool):
    assert is_retryable(exc) is retryable
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = exc
    assert is_retryable(wrapped) is retryable


def test_log_lines_are_numbered_batched_and_resent_after_a_failure():
    sent: list[list[LogLine]] = []
    failures: list[Exception] = []
    fail = [True]

    def send(lines: Any) -> None:
        if fail[0]:
            fail[0] = False
            raise ControlPlaneError(503, "unavailable", "busy")
        sent.append(list(lines))

    log = BufferedRunLog(send, first_seq=41, max_batch=3, on_error=failures.append)
    for i in range(7):
        log.write("step", f"line {i}", fields={"i": i, "when": object()})
    log.flush()
    assert len(failures) == 1
    # The failed batch went out again with the next one, under the same numbers.
    assert [[line.seq for line in batch] for batch in sent] == [[41, 42, 43, 44], [45, 46, 47]]
    assert sent[0][0].fields["i"] == 0 and isinstance(sent[0][0].fields["when"], str)
    assert not log.due()
    strict = BufferedRunLog(lambda lines: (_ for _ in ()).throw(ControlPlaneError(500, "x", "y")))
    strict.write("s", "m")
    with pytest.raises(ControlPlaneError):
        strict.flush()


def test_only_built_in_entrypoints_load():
    factory = load_entrypoint("cost_anomaly.graph:build_graph")
    assert callable(factory)
    # Versions published before the agent became a package of its own keep running the same code.
    assert load_entrypoint("runtime.agents.cost_anomaly.graph:build_graph") is factory
    assert agent_tools("runtime.agents.cost_anomaly.graph:build_graph") is agent_tools("cost_anomaly.graph:build_graph")
    for bad in ("os:system", "acme_agent.graph:build_graph", "cost_anomaly.graph", "cost_anomaly.nope:build_graph",
                "cost_anomaly.graph:missing", "cost_anomaly_extra.graph:build_graph", "runtime.executor:Executor",
                "runtime.agents.cost_anomaly.graph:missing", "runtime.agents.nope.graph:build_graph"):
        with pytest.raises(AgentLoadError):
            load_entrypoint(bad)
    manifest = copy.deepcopy(MANIFEST)
    manifest["runtime"]["entrypoint"] = "os:system"
    outcome = Executor().execute(spec(manifest=manifest), log=MemoryRunLog())
    assert outcome.status == "failed" and outcome.error.startswith("AgentLoadError")
