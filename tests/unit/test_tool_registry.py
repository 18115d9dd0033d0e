"""The data plane's tool registry: declared and implemented tools only, every permission granted."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from cost_anomaly.tools import TOOLS
from runtime.executor import agent_tools
from runtime.tools import ToolPermissionDenied, ToolRegistry, UnknownTool

ROOT = Path(__file__).resolve().parents[2]


class Spec(NamedTuple):
    func: object
    permissions: frozenset[str]


CALLS: list[tuple[str, dict]] = []


def read_bill(**kwargs: object) -> str:
    CALLS.append(("billing.read", kwargs))
    return "rows"


def stop_vm(**kwargs: object) -> str:
    CALLS.append(("compute.stop", kwargs))
    return "stopped"


IMPLEMENTED = {"billing.read": Spec(read_bill, frozenset({"billing:read"})),
               "compute.stop": Spec(stop_vm, frozenset({"compute:write"})),
               "secret.dump": Spec(read_bill, frozenset())}
MANIFEST = {"tools": [{"name": "billing.read", "permissions": ["billing:read"]},
                      {"name": "compute.stop", "permissions": ["compute:write", "compute:read"]},
                      {"name": "declared.only", "permissions": []}]}


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def test_a_granted_tool_runs_with_its_arguments():
    registry = ToolRegistry.for_agent(MANIFEST, IMPLEMENTED, ["billing:read"])
    assert registry.call("billing.read", source="s3://bucket/x.csv") == "rows"
    assert CALLS == [("billing.read", {"source": "s3://bucket/x.csv"})]
    assert registry.names == ["billing.read", "compute.stop"]


def test_default_deny_refuses_before_the_code_runs():
    registry = ToolRegistry.for_agent(MANIFEST, IMPLEMENTED, [])
    with pytest.raises(ToolPermissionDenied) as refused:
        registry.call("billing.read", source="x")
    assert refused.value.missing == ["billing:read"] and refused.value.granted == []
    assert isinstance(refused.value, PermissionError) and refused.value.retryable is False
    assert "needs permission billing:read" in str(refused.value) and "granted: none" in str(refused.value)
    assert CALLS == []


def test_the_manifest_permissions_of_a_tool_count_too():
    # The code needs compute:write; the manifest also lists compute:read for the tool.
    registry = ToolRegistry.for_agent(MANIFEST, IMPLEMENTED, ["compute:write"])
    with pytest.raises(ToolPermissionDenied) as refused:
        registry.call("compute.stop", vm="vm-1")
    assert refused.value.missing == ["compute:read"]
    both = ToolRegistry.for_agent(MANIFEST, IMPLEMENTED, ["compute:write", "compute:read"])
    assert both.call("compute.stop", vm="vm-1") == "stopped"


def test_tools_not_both_implemented_and_declared_do_not_exist():
    registry = ToolRegistry.for_agent(MANIFEST, IMPLEMENTED, ["billing:read", "compute:write", "compute:read"])
    with pytest.raises(UnknownTool, match=r"secret\.dump"):  # implemented, never declared
        registry.call("secret.dump")
    with pytest.raises(UnknownTool, match=r"declared\.only"):  # declared, not implemented
        registry.call("declared.only")
    with pytest.raises(UnknownTool):
        registry.check("nope")
    assert CALLS == []


def test_registering_a_name_twice_is_an_error():
    registry = ToolRegistry(["a"])
    registry.register("t", read_bill, ["a"])
    with pytest.raises(ValueError, match="twice"):
        registry.register("t", stop_vm, [])
    assert registry.check("t").permissions == frozenset({"a"})


def test_the_built_in_agent_reads_billing_only_with_billing_read():
    manifest = yaml.safe_load((ROOT / "agents/cost-anomaly/manifest.yaml").read_text())
    assert agent_tools(manifest["runtime"]["entrypoint"]) is TOOLS
    registry = ToolRegistry.for_agent(manifest, TOOLS, ["compute:write"])
    with pytest.raises(ToolPermissionDenied, match="billing:read"):
        registry.check("billing.read_focus")
    assert ToolRegistry.for_agent(manifest, TOOLS, ["billing:read"]).check("billing.read_focus")
