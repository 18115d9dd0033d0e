"""Helpers shared by the registry and catalog tests: manifests, publishing, installs."""

from __future__ import annotations

import copy
import random
import uuid
from typing import Any

from shared.kernel.ids import new_id

_SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "qui", "zel", "nax", "pro", "dul", "fen", "gar", "sol",
              "bri", "mon", "tal", "vex", "rin", "zu"]


def unique_name(prefix: str = "agent") -> str:
    """A slug no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unique_word(syllables: int = 4) -> str:
    """A made-up word (9+ letters) that appears in no other listing, for search tests."""
    rng = random.Random(uuid.uuid4().int)
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables)) + rng.choice(["ix", "or", "um", "ela"])


def make_manifest(name: str | None = None, version: str = "1.0.0", **overrides: Any) -> dict[str, Any]:
    """A valid manifest; ``overrides`` replace top-level fields."""
    manifest: dict[str, Any] = {
        "name": name or unique_name(),
        "version": version,
        "display_name": "Spend Watcher",
        "description": "Watches cloud spend and reports unusual changes.",
        "category": "finops",
        "tags": ["finops", "cost"],
        "publisher": "Acme Agents",
        "runtime": {"framework": "langgraph", "entrypoint": "acme_agent.graph:build_graph",
                    "timeout_seconds": 600, "resources": {"cpu": "500m", "memory": "512Mi"}},
        "inputs": {"type": "object", "properties": {"days": {"type": "integer", "minimum": 1}},
                   "additionalProperties": False},
        "config": {"type": "object", "additionalProperties": False},
        "permissions": ["billing:read"],
        "tools": [{"name": "billing.read_focus", "description": "Read billing records",
                   "permissions": ["billing:read"]}],
        "constraints": ["requires-human-approval-for-remediation"],
        "memory": {"levels": [1, 2, 3], "namespaces": ["cost_anomalies"]},
        "pricing": {"base_usd": "0.50", "per_record_usd": "0.001", "per_cpu_hour_usd": "0.50"},
        "deployment": ["saas", "byoc"],
    }
    manifest.update(copy.deepcopy(overrides))
    return manifest


def submit(dev: Any, org_id: str, manifest: dict[str, Any]) -> dict[str, Any]:
    resp = dev.post("/agents", json={"org_id": org_id, "manifest": manifest})
    assert resp.status == 201, resp
    return resp.body


def publish(dev: Any, org_id: str, padmin: Any, manifest: dict[str, Any]) -> str:
    """Submit and approve; returns the agent id."""
    agent_id = submit(dev, org_id, manifest)["listing"]["id"]
    resp = padmin.post(f"/admin/agents/{agent_id}/approve", json={})
    assert resp.status == 200, resp
    return agent_id


def record_install(container: Any, org_id: str, agent_id: str, version: str = "1.0.0",
                   status: str = "ready") -> str:
    """A deployment row, as the install flow writes it (the registry only reads this table)."""
    deployment_id = new_id("dep")
    with container.db.transaction() as tx:
        tx.execute("INSERT INTO deployments (id, org_id, agent_id, version, deployment_type, status, created_by) "
                   "VALUES (%s, %s, %s, %s, 'saas', %s, 'test')", deployment_id, org_id, agent_id, version, status)
    return deployment_id


def count_rows(container: Any) -> dict[str, int]:
    with container.db.transaction() as tx:
        return {table: int(tx.fetch_val(f"SELECT count(*) FROM {table}"))
                for table in ("agents", "agent_versions", "audit_log", "catalog_terms")}


def audit_actions(admin: Any, org_id: str) -> list[str]:
    resp = admin.get(f"/orgs/{org_id}/audit?limit=200")
    assert resp.status == 200, resp
    return [entry["action"] for entry in resp.body["items"]]
