"""The LangGraph graph of the built-in cost-anomaly agent (Flow 2 of the architecture document).

    fetch_billing_data -> normalize -> detect_anomalies -> generate_recommendations -> report

Nodes reach the platform only through the ``AgentContext`` the data plane puts in
``config["configurable"]["agent"]``: billing data arrives through the ``billing.read_focus`` tool
(so the tool registry permission-checks and audits the read), progress goes to ``agent.log`` with
the step messages of the architecture document, and the fetched record count to
``agent.count_records`` (per-record pricing bills it).

The state stays JSON-serialisable so a PostgreSQL checkpointer can store every step. Raw records
live in it only between fetching and normalizing, in columnar form; ``normalize`` replaces them with
the daily roll-up (a few points per resource and day), so a 100,000-row export does not travel
through the remaining checkpoints.

Settings (names as in the agent's manifest):

- ``config["billing_source"]``: path, ``file://`` or ``http(s)://`` URL of a FOCUS 1.0 CSV; omitted, the
  shipped demo export (``focus.DEMO_CSV``) is read, so the agent runs with no config at all;
- ``config["sensitivity"]``: robust z-score threshold in standard deviations (default 3), or one of
  ``low``/``medium``/``high``;
- ``config["cost_metric"]`` (``billed_cost``, default, or ``effective_cost``) and
  ``config["min_cost_usd"]`` (the smallest daily deviation worth reporting), used when present;
- ``inputs["lookback_days"]`` (default 30): only the most recent days of the data are analysed;
- ``inputs["currency"]`` (default ``USD``): rows billed in another currency are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import TypedDict
from urllib.parse import urlsplit

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from cost_anomaly.detect import (
    SENSITIVITIES,
    AnomalyDict,
    DetectionSettings,
    Sensitivity,
    build_series,
    detect_anomalies,
)
from cost_anomaly.focus import (
    COST_METRICS,
    DEMO_CSV,
    CostMetric,
    DailyCostTable,
    DailyRollup,
    coerce_records,
    records_from_columns,
    records_to_columns,
)
from cost_anomaly.recommend import RecommendationDict, RecommendationSettings, recommend
from cost_anomaly.report import CostAnomalyOutput, build_output
from cost_anomaly.tools import READ_FOCUS
from runtime.agent_context import CONFIGURABLE_KEY, AgentContext

#: Where the data plane puts the run's memory context (runtime/run_memory.py's MEMORY_KEY).
MEMORY_KEY = "memory"

#: Node names, in execution order.
NODES: tuple[str, ...] = (
    "fetch_billing_data",
    "normalize",
    "detect_anomalies",
    "generate_recommendations",
    "report",
)
DEFAULT_SENSITIVITY = 3.0  # the manifest's default for config.sensitivity
DEFAULT_LOOKBACK_DAYS = 30
DEFAULT_CURRENCY = "USD"


class CostAnomalyState(TypedDict, total=False):
    """Graph state; every value is JSON. ``outputs`` is the run's result."""

    billing: dict[str, list[object]] | None  # fetched records, columnar; cleared by normalize
    record_count: int
    skipped_records: int
    daily: dict[str, object]  # focus.DailyCostTable.to_json()
    anomalies: list[AnomalyDict]
    recommendations: list[RecommendationDict]
    remediations: list[dict[str, object]]
    outputs: CostAnomalyOutput


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The run's settings, read from the agent context's config and inputs and validated."""

    billing_source: str
    metric: CostMetric
    currency: str
    lookback_days: int
    detection: DetectionSettings
    recommendation: RecommendationSettings

    @classmethod
    def from_agent(cls, agent: AgentContext, memory: Mapping[str, object] | None = None) -> RunOptions:
        """Validate the settings; raises ``ValueError`` naming the offending key. Thresholds the
        org set in its preferences (memory Level 5, ``cost_anomaly.sensitivity`` and
        ``cost_anomaly.min_cost_usd``) take precedence over the deployment's config."""
        config: Mapping[str, object] = {**agent.config, **preferred_thresholds(memory or {})}
        inputs = agent.inputs
        source = config.get("billing_source", str(DEMO_CSV))
        if not isinstance(source, str) or not source.strip():
            raise ValueError("config.billing_source must be a non-empty path or URL of a FOCUS 1.0 CSV")
        metric = config.get("cost_metric", "billed_cost")
        if metric not in COST_METRICS:
            raise ValueError(f"config.cost_metric must be one of {', '.join(COST_METRICS)}")
        currency = inputs.get("currency", DEFAULT_CURRENCY)
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isupper():
            raise ValueError("inputs.currency must be an ISO 4217 code such as USD")
        lookback = inputs.get("lookback_days", DEFAULT_LOOKBACK_DAYS)
        if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 1:
            raise ValueError("inputs.lookback_days must be a positive integer")
        min_cost = config.get("min_cost_usd")
        if min_cost is not None and (isinstance(min_cost, bool) or not isinstance(min_cost, int | float)):
            raise ValueError("config.min_cost_usd must be a number")
        detection = DetectionSettings.for_sensitivity(
            _sensitivity(config.get("sensitivity", DEFAULT_SENSITIVITY)),
            min_cost_usd=None if min_cost is None else float(min_cost),
            currency=currency,
        )
        return cls(
            billing_source=source,
            metric=metric,
            currency=currency,
            lookback_days=lookback,
            detection=detection,
            recommendation=RecommendationSettings(currency=currency),
        )


def _sensitivity(value: object) -> Sensitivity | float:
    if isinstance(value, str) and value in SENSITIVITIES:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise ValueError(f"config.sensitivity must be a positive number or one of {', '.join(SENSITIVITIES)}")


def memory_from_config(config: RunnableConfig) -> Mapping[str, object]:
    """The run's memory context (``config["configurable"]["memory"]``), empty without one."""
    configurable: Mapping[str, object] = config.get("configurable") or {}
    memory = configurable.get(MEMORY_KEY)
    return memory if isinstance(memory, Mapping) else {}


def preferred_thresholds(memory: Mapping[str, object]) -> dict[str, object]:
    """``sensitivity`` and ``min_cost_usd`` from the org's preferences, where set."""
    preferences = memory.get("preferences")
    mine = preferences.get("cost_anomaly") if isinstance(preferences, Mapping) else None
    if not isinstance(mine, Mapping):
        return {}
    return {key: mine[key] for key in ("sensitivity", "min_cost_usd") if key in mine}


def rejected_actions(memory: Mapping[str, object]) -> set[str]:
    """The remediation actions an approver rejected before (memory Level 4 episodes)."""
    items = memory.get("items")
    found: set[str] = set()
    for item in items if isinstance(items, list) else []:
        metadata = item.get("metadata") if isinstance(item, Mapping) else None
        if isinstance(metadata, Mapping) and metadata.get("decision") == "rejected" and metadata.get("action_id"):
            found.add(str(metadata["action_id"]))
    return found


def agent_from_config(config: RunnableConfig) -> AgentContext:
    """The agent context the data plane passed in ``config["configurable"]["agent"]``."""
    configurable: Mapping[str, object] = config.get("configurable") or {}
    agent = configurable.get(CONFIGURABLE_KEY)
    if not isinstance(agent, AgentContext):
        raise RuntimeError(
            "the cost-anomaly graph needs an AgentContext in config['configurable']['agent']; "
            "run it through the data plane (or pass a test context)"
        )
    return agent


# --------------------------------------------------------------------------------------------
# Nodes


def fetch_billing_data(state: CostAnomalyState, config: RunnableConfig) -> CostAnomalyState:  # noqa: ARG001
    """Read the billing export through the permission-checked ``billing.read_focus`` tool (the first
    node starts from an empty state; LangGraph still passes it, as ``state``)."""
    agent = agent_from_config(config)
    options = RunOptions.from_agent(agent, memory_from_config(config))
    # The source itself is not logged: a signed export URL carries a credential in its query.
    scheme = urlsplit(options.billing_source).scheme or "file"
    agent.log(NODES[0], "Fetching billing data", tool=READ_FOCUS, scheme=scheme)
    result = agent.call_tool(READ_FOCUS, source=options.billing_source)
    columns = records_to_columns(coerce_records(result))
    count = len(columns["day"])
    agent.count_records(count)
    agent.log(NODES[0], f"Fetched {count} records", records=count)
    return {"billing": columns, "record_count": count}


def normalize(state: CostAnomalyState, config: RunnableConfig) -> CostAnomalyState:
    """Roll the records up to daily grain, keep the lookback window and the run's currency."""
    agent = agent_from_config(config)
    options = RunOptions.from_agent(agent, memory_from_config(config))
    billing = state.get("billing")
    if billing is None:
        raise RuntimeError("normalize ran before fetch_billing_data stored any records")
    agent.log(NODES[1], "Normalizing records", records=state.get("record_count", 0))
    rollup = DailyRollup()
    skipped = 0
    for record in records_from_columns(billing):
        if record.currency is not None and record.currency != options.currency:
            skipped += 1
            continue
        rollup.add(record)
    table = rollup.build()
    if table.days:
        table = table.last_days(options.lookback_days)
    agent.log(
        NODES[1],
        "Normalization complete",
        days=len(table.days),
        first_day=table.days[0].isoformat() if table.days else None,
        last_day=table.days[-1].isoformat() if table.days else None,
        cost_lines=len(table.lines),
        skipped_other_currency=skipped,
    )
    # Dropping the raw records keeps the following checkpoints small.
    return {"billing": None, "daily": table.to_json(), "skipped_records": skipped}


def detect(state: CostAnomalyState, config: RunnableConfig) -> CostAnomalyState:
    """Find spikes, drops, new services and step changes in the daily series."""
    agent = agent_from_config(config)
    options = RunOptions.from_agent(agent, memory_from_config(config))
    table = _table(state)
    series = build_series(table, options.metric)
    agent.log(
        NODES[2], "Analyzing patterns", series=len(series), days=len(table.days),
        z_threshold=options.detection.z_threshold, min_cost_usd=options.detection.min_cost_usd,
    )
    found = detect_anomalies(series, table.days, options.detection)
    kinds = Counter(anomaly.kind for anomaly in found)
    agent.log(
        NODES[2], f"Detected {_plural(len(found), 'anomaly', 'anomalies')}", by_kind=dict(sorted(kinds.items()))
    )
    return {"anomalies": [anomaly.to_dict() for anomaly in found]}


def generate_recommendations(state: CostAnomalyState, config: RunnableConfig) -> CostAnomalyState:
    """Derive savings recommendations and their remediation proposals (data only, never executed)."""
    agent = agent_from_config(config)
    options = RunOptions.from_agent(agent, memory_from_config(config))
    table = _table(state)
    agent.log(NODES[3], "Generating recommendations")
    found = recommend(table, options.metric, options.recommendation)
    rejected = rejected_actions(memory_from_config(config))
    if rejected:  # never propose again what an approver rejected (memory Level 4)
        kept = [rec for rec in found if rec.proposal["action_id"] not in rejected]
        agent.log(NODES[3], f"Skipped {_plural(len(found) - len(kept), 'remediation')} rejected before",
                  skipped=len(found) - len(kept))
        found = kept
    savings = round(sum(rec.estimated_monthly_savings_usd for rec in found), 2)
    agent.log(
        NODES[3], f"{_plural(len(found), 'recommendation')} generated",
        estimated_monthly_savings_usd=savings, proposals=len(found),
    )
    recommendations = [rec.to_dict() for rec in found]
    return {"recommendations": recommendations, "remediations": _remediate(agent, recommendations)}


#: The platform's gated tool that stops an idle resource, and how many the agent asks for per run.
STOP_INSTANCE = "cloud.stop_instance"
MAX_REMEDIATIONS = 5


def _remediate(agent: AgentContext, recommendations: list[RecommendationDict]) -> list[dict[str, object]]:
    """With ``config.remediation = approve_and_execute``, ask to stop each idle resource. Each call
    waits for a human approval (the platform's gate stops the run there and resumes it when the
    decision is in); a call that was not approved returns ``executed: false`` and nothing happens.
    A deployment whose manifest lacks the tool, or without ``compute:write``, only proposes."""
    if agent.config.get("remediation") != "approve_and_execute":
        return []
    done: list[dict[str, object]] = []
    for rec in recommendations:
        if rec["kind"] != "idle_resource" or not rec["resource_id"] or len(done) >= MAX_REMEDIATIONS:
            continue
        try:
            result = agent.call_tool(STOP_INSTANCE, resource_id=rec["resource_id"],
                                     estimated_monthly_saving_usd=f"{rec['estimated_monthly_savings_usd']:.2f}",
                                     reason=rec["title"])
        except (LookupError, PermissionError) as exc:
            agent.log(NODES[3], f"Remediation not available here: {exc}")
            return done
        outcome = result if isinstance(result, dict) else {"result": result}
        done.append({"resource_id": rec["resource_id"], "tool": STOP_INSTANCE,
                     "estimated_monthly_savings_usd": rec["estimated_monthly_savings_usd"], **outcome})
        agent.log(NODES[3], f"Remediation of {rec['resource_id']}: "
                            f"{'executed' if outcome.get('executed') else outcome.get('status')}",
                  resource_id=rec["resource_id"], executed=bool(outcome.get("executed")))
    return done


def report(state: CostAnomalyState, config: RunnableConfig) -> CostAnomalyState:
    """Assemble the outputs: JSON result plus the markdown report."""
    agent = agent_from_config(config)
    options = RunOptions.from_agent(agent, memory_from_config(config))
    agent.log(NODES[4], "Writing report")
    output = build_output(
        _table(state),
        state.get("anomalies", []),
        state.get("recommendations", []),
        metric=options.metric,
        detection=options.detection,
    )
    if state.get("remediations"):
        output["remediations"] = state["remediations"]
    agent.log(
        NODES[4], "Report complete", anomalies=output["summary"]["anomaly_count"],
        recommendations=output["summary"]["recommendation_count"],
    )
    return {"outputs": output}


def _table(state: CostAnomalyState) -> DailyCostTable:
    daily = state.get("daily")
    if daily is None:
        raise RuntimeError("the daily roll-up is missing: normalize has not run")
    return DailyCostTable.from_json(daily)


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def build_graph() -> StateGraph[CostAnomalyState]:
    """The agent's graph, uncompiled: the data plane compiles it with its own checkpointer
    (``build_graph().compile(checkpointer=...)``) and invokes it with
    ``config={"configurable": {"agent": context, "thread_id": run_id}}``."""
    graph = StateGraph(CostAnomalyState)
    graph.add_node(NODES[0], fetch_billing_data)
    graph.add_node(NODES[1], normalize)
    graph.add_node(NODES[2], detect)
    graph.add_node(NODES[3], generate_recommendations)
    graph.add_node(NODES[4], report)
    graph.add_edge(START, NODES[0])
    for before, after in pairwise(NODES):
        graph.add_edge(before, after)
    graph.add_edge(NODES[-1], END)
    return graph
