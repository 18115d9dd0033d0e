"""No caller reaches another tenant's objects, or an action its role lacks: a matrix generated from
/openapi.json.

Every operation with an id in its path (and the few that take an org in the body) is called with
org A's real ids:

(a) by another tenant: org B's admin (for the data-plane API, B's data-plane key) must get 404,
    the same answer as for an id that does not exist; platform-admin operations answer 403 to
    anyone who is not a platform admin;
(b) by members of org A whose role lacks the permission (each such role, and a viewer API key):
    403 (404 where the rule hides the object), and 403 for a user on the data-plane API and a non-platform admin on
    a platform-admin operation.

Never a 2xx, never a body other than the error body, and afterwards org A's state is unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from contract_support import ROLES, Tenant, path_ids, tenant
from registry_support import make_manifest

from functions.main import load_operations
from functions.openapi import openapi_document
from shared.identity import ADMIN, PUBLISHERS, REVIEWERS, RUNNERS

load_operations()
DOC = openapi_document()

# Operations with an id whose role check happens in the use case (the org is the object's),
# and the roles it allows; and those any member of the object's org may read.
IN_SERVICE_ROLES = {"create_run": RUNNERS, "cancel_run": RUNNERS, "post_review": REVIEWERS,
                    "submit_version": PUBLISHERS, "submit_agent": PUBLISHERS,
                    "upload_package": PUBLISHERS,  # issue 14
                    # issue 15: a notification is its recipient's only (here org A's admin's)
                    "read_notification": ADMIN}
ANY_MEMBER_READS = {"get_run", "get_run_logs", "get_run_report", "get_agent", "get_agent_version", "list_reviews"}
# Operations that name the org in the body rather than the path.
BODY_ORG = {"submit_agent": ("POST", "/agents")}


def _operations() -> list[tuple[str, str, str, dict[str, Any]]]:
    found = []
    for path, item in DOC["paths"].items():
        for method, entry in item.items():
            if "{" in path or entry["operationId"] in BODY_ORG:
                found.append((entry["operationId"], method.upper(), path, entry))
    return sorted(found)


OPERATIONS = _operations()


def _body(op_id: str, a: Tenant) -> Any:
    """A request body that is valid, so that only the caller decides the answer."""
    now = "2026-01-01T00:00:00+00:00"
    blob = {"type": "json", "data": "e30="}
    bodies: dict[str, Any] = {
        "add_member": {"email": "newcomer@example.com", "role": "viewer"},
        "update_member": {"role": "admin"},
        "create_api_key": {"name": "stolen", "role": "admin"},
        "put_preferences": {"data": {"owned": True}},
        "install_agent": {"agent_id": a.agent_id, "config": {}},
        "upgrade_deployment": {"version": "1.0.0"},
        "consent_upgrade": {"approve": True},
        "create_webhook": {"url": "https://1.1.1.1/steal", "events": ["run.completed"]},
        "approve_agent": {}, "reject_agent": {"reason": "no"}, "suspend_agent": {"reason": "no"},
        "submit_agent": {"org_id": a.org_id, "manifest": make_manifest()},
        "submit_version": {"manifest": make_manifest(a.ids["listing_name"], "2.0.0")},
        "post_review": {"org_id": a.org_id, "rating": 1, "text": "bad"},
        "create_run": {"deployment_id": a.deployment_id, "inputs": {}},
        "task_heartbeat": {"lease_token": "x", "lease_seconds": 60},
        "append_run_logs": {"lease_token": "x", "lines": [
            {"seq": 1, "ts": now, "step": "s", "message": "injected"}]},
        "complete_run": {"task_id": a.ids["task_id"], "lease_token": "x", "status": "failed",
                         "metrics": {"records_processed": 0, "cpu_seconds": 0}},
        "put_checkpoint": {"checkpoint": blob, "metadata": blob},
        "put_checkpoint_writes": {"task_id": "t", "writes": [{"idx": 0, "channel": "c", "value": blob}]},
        # billing (issue 16)
        "put_limits": {"monthly_budget_usd": "1"}, "freeze": {"reason": "stolen"},
        "report_usage": {"lease_token": "x", "records_processed": 1, "cpu_seconds": 0},
        "onboard_payouts": {"refresh_url": "https://1.1.1.1/r", "return_url": "https://1.1.1.1/d"},
        # issue 15
        "approve_action": {"comment": "mine"}, "reject_action": {"comment": "mine"},
        "put_approval_policy": {"required_approvals": 3},
        "put_notification_settings": {"email_enabled": False},
        "await_approval": {"task_id": a.ids["task_id"], "lease_token": "x", "actions": [
            {"interrupt_id": "i", "tool": "t", "arguments": {}, "action_hash": "0" * 64}]},
        "claim_execution": {"lease_token": "x", "action_hash": "0" * 64},
        "record_execution": {"lease_token": "x", "outcome": {"state": "stopped"}},
        # -- memory (issue 17) --
        "add_knowledge": {"documents": ["stolen knowledge"]}, "forget_subject": {"subject": "user:contract"},
        "load_run_memory": {"query": "everything"}, "store_run_memory": {"summary": "injected"},
    }
    return bodies.get(op_id)


@pytest.fixture(scope="module")
def orgs(app: Any, container: Any, settings: Any) -> tuple[Tenant, Tenant]:
    return tenant(app, container, settings), tenant(app, container, settings, full=False)


def _snapshot(a: Tenant) -> str:
    """What org A holds, as its admin reads it."""
    reads = [f"/orgs/{a.org_id}", f"/orgs/{a.org_id}/members", f"/orgs/{a.org_id}/api-keys",
             f"/orgs/{a.org_id}/webhooks", f"/orgs/{a.org_id}/deployments", f"/orgs/{a.org_id}/preferences",
             f"/orgs/{a.org_id}/runs", f"/orgs/{a.org_id}/audit?limit=200", f"/agents/{a.ids['listing_id']}",
             f"/developers/{a.org_id}/agents", f"/agents/{a.agent_id}/runs/{a.ids['run_id']}/logs",
             f"/orgs/{a.org_id}/billing/limits", f"/orgs/{a.org_id}/usage",  # billing (issue 16)
             f"/orgs/{a.org_id}/invoices", f"/developers/{a.org_id}/payouts", f"/developers/{a.org_id}/earnings",
             f"/orgs/{a.org_id}/approvals", f"/orgs/{a.org_id}/approval-policy",
             f"/orgs/{a.org_id}/notification-settings", "/me/notifications",
             f"/orgs/{a.org_id}/memory/search?level=2&query=contract+memory"]  # memory (issue 17)
    out = {}
    for path in reads:
        resp = a.admin.get(path)
        assert resp.status == 200, (path, resp)
        out[path] = resp.body
    return json.dumps(out, sort_keys=True, default=str)


def _call(caller: Any, method: str, path: str, op_id: str, a: Tenant, token: str | None = None) -> Any:
    url = path.format(**path_ids(a, path))
    if op_id == "upload_package":  # issue 14: a body of bytes, A's own package
        return caller.request(method, url, data=a.package, token=token, headers={"Content-Type": "application/gzip"})
    return caller.request(method, url, json=_body(op_id, a), token=token, headers={"X-Lease-Token": "x"})


def _refused(resp: Any, allowed: set[int], who: str) -> str | None:
    if resp.status not in allowed:
        return f"{who}: {resp.status} (expected {sorted(allowed)}) {resp.body}"
    if resp.body is None or set(resp.body) != {"error"}:
        return f"{who}: a body other than the error body: {resp.body}"
    return None


def test_the_matrix_covers_every_operation_with_an_id():
    for op_id, _method, path, entry in OPERATIONS:
        if entry.get("x-roles") or entry.get("x-platform-admin") or entry.get("x-dataplane"):
            continue
        assert op_id in IN_SERVICE_ROLES or op_id in ANY_MEMBER_READS, (
            f"{op_id} ({path}): say who may call it (IN_SERVICE_ROLES or ANY_MEMBER_READS)")
    assert len(OPERATIONS) > 35


@pytest.mark.parametrize(("op_id", "method", "path", "entry"), OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_no_caller_reaches_what_is_not_theirs(orgs: tuple[Tenant, Tenant], op_id: str, method: str, path: str,
                                              entry: dict[str, Any]) -> None:
    a, b = orgs
    before = _snapshot(a)
    problems: list[str] = []
    # (a) another tenant, with A's ids.
    if entry.get("x-dataplane"):
        resp = _call(b.admin, method, path, op_id, a, token=b.dataplane_key)
        problems.append(_refused(resp, {404}, "org B's data plane") or "")
    elif entry.get("x-platform-admin"):
        problems.append(_refused(_call(b.admin, method, path, op_id, a), {403}, "org B's admin") or "")
    else:
        problems.append(_refused(_call(b.admin, method, path, op_id, a), {404}, "org B's admin") or "")
    # (b) org A's own members, where their role does not allow the action.
    if entry.get("x-dataplane") or entry.get("x-platform-admin"):
        for role in ROLES:
            problems.append(_refused(_call(a.members[role], method, path, op_id, a), {403}, f"A's {role}") or "")
    else:
        allowed = set(entry.get("x-roles") or [str(r) for r in IN_SERVICE_ROLES.get(op_id, ROLES)])
        for role in sorted(set(ROLES) - allowed):
            resp = _call(a.members[role], method, path, op_id, a)
            problems.append(_refused(resp, {403, 404}, f"A's {role}") or "")
        if "viewer" not in allowed:  # an org API key acts as a member holding its role
            resp = _call(a.admin, method, path, op_id, a, token=a.viewer_key)
            problems.append(_refused(resp, {403, 404}, "A's viewer API key") or "")
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
    assert _snapshot(a) == before, "org A's state changed"
