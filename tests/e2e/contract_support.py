"""A small world for the contract tests: two orgs with their resources, one member per role.

Built once per test module through the gateway (the same calls a client makes), on the session's
database: org A holds one of everything an id in a path can name; org B is another tenant with
its own admin and data-plane key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from approvals_support import proposed
from conftest import Client, unique_email
from registry_support import make_manifest, submit
from runs_support import claim, install_builtin, metrics, start_run
from support import packages

ROLES = ("admin", "developer", "operator", "approver", "viewer")


@dataclass
class Tenant:
    admin: Client
    org_id: str
    deployment_id: str
    agent_id: str  # the installed (public) built-in agent
    dataplane_key: str
    members: dict[str, Client] = field(default_factory=dict)  # role -> a member holding it
    ids: dict[str, str] = field(default_factory=dict)  # path parameter name -> an id of this org
    viewer_key: str = ""  # an org API key with the viewer role
    package: bytes = b""  # issue 14: the code package of its pending listing's version 1.0.0


def user(app: Any, container: Any, tag: str, *, platform_admin: bool = False) -> Client:
    email = unique_email(tag)
    pair = container.identity.dev_grant(email, platform_admin=True if platform_admin else None)
    client = Client(app, pair.access_token)
    client.email = email  # type: ignore[attr-defined]
    return client


def tenant(app: Any, container: Any, settings: Any, *, platform_admin: bool = False, full: bool = True,
           finish_run: bool = False) -> Tenant:
    """An org whose admin (a platform admin too, if asked) installed the built-in agent; with
    ``full``, also a member of every role, an API key, a webhook, a pending listing and a run
    (finished, with ``finish_run``)."""
    admin = user(app, container, "contract-admin", platform_admin=platform_admin)
    org_id = admin.post("/orgs", json={"name": "Contract Org"}).body["id"]
    installed = install_builtin(container, None, Client(app), settings, org=(admin, org_id))
    t = Tenant(admin=admin, org_id=org_id, deployment_id=installed.deployment_id, agent_id=installed.agent_id,
               dataplane_key=installed.key, members={"admin": admin})
    t.ids = {"org_id": org_id, "deployment_id": installed.deployment_id}
    # -- memory (issue 17): a knowledge namespace, and one memory of the org --
    t.ids["namespace"] = "cost_anomalies"
    if container.memory is not None:
        from shared.memory import Level, NewMemory

        t.ids["memory_id"] = container.memory.remember(org_id, [NewMemory(
            level=Level.SUMMARY, content="contract memory", subjects=["user:contract"])])[0].id
    if not full:
        return t
    for role in ROLES[1:]:
        member = user(app, container, role)
        resp = admin.post(f"/orgs/{org_id}/members", json={"email": member.email, "role": role})
        assert resp.status == 201, resp
        member.user_id = resp.body["user_id"]  # type: ignore[attr-defined]
        t.members[role] = member
    t.ids["user_id"] = t.members["viewer"].user_id  # type: ignore[attr-defined]
    key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "contract", "role": "viewer"})
    assert key.status == 201, key
    t.ids["key_id"] = key.body["id"]
    t.viewer_key = key.body["key"]
    hook = admin.post(f"/orgs/{org_id}/webhooks", json={"url": "https://1.1.1.1/hook", "events": ["run.completed"]})
    assert hook.status == 201, hook
    t.ids["webhook_id"] = hook.body["id"]
    manifest = make_manifest()
    listing = submit(admin, org_id, manifest)["listing"]  # pending review: only org A sees it
    t.ids["listing_id"] = listing["id"]
    t.ids["listing_name"] = listing["name"]
    t.ids["version"] = "1.0.0"
    # issue 14: the version's code package, by its digest
    t.package = packages.package(manifest)
    uploaded = admin.put(f"/agents/{listing['id']}/versions/1.0.0/package", data=t.package,
                         headers={"Content-Type": "application/gzip"})
    assert uploaded.status == 201, uploaded
    t.ids["sha256"] = uploaded.body["sha256"]
    t.ids["checkpoint_id"] = "1ef00000-0000-6000-8000-000000000000"
    # issue 15: a run parked at a gated call (its approval pending) and the admin's notification of it.
    parked = start_run(admin, installed)
    leased = claim(Client(app), installed.key, wait=5)
    assert leased is not None and leased["run_id"] == parked["id"], leased
    waiting = Client(app).post(f"/agents/{installed.agent_id}/runs/{parked['id']}/await-approval",
                               token=installed.key, json={"task_id": leased["task_id"],
                                                          "lease_token": leased["lease_token"],
                                                          "actions": [proposed(parked)]})
    assert waiting.status == 200, waiting
    t.ids["approval_id"] = waiting.body["approvals"][0]["id"]
    t.ids["notification_id"] = admin.get("/me/notifications").body["items"][0]["id"]
    run = start_run(admin, installed)
    t.ids["run_id"] = run["id"]
    if finish_run:  # so that its live log stream ends at once
        anon = Client(app)
        task = claim(anon, installed.key, wait=5)
        assert task is not None and task["run_id"] == run["id"], task
        done = anon.post(f"/agents/{installed.agent_id}/runs/{run['id']}/complete", token=installed.key, json={
            "task_id": task["task_id"], "lease_token": task["lease_token"], "status": "succeeded",
            "metrics": metrics(1, 0.1)})
        assert done.status == 200, done
    with container.db.read() as db:
        t.ids["task_id"] = str(db.fetch_val("SELECT task_id FROM runs WHERE id = %s", run["id"]))
    # billing (issue 16): an invoice of the org, written directly (the billing cycle is global).
    t.ids["invoice_id"] = f"inv_contract_{org_id}"
    with container.db.transaction() as db:
        db.execute("INSERT INTO invoices (id, org_id, period, status, total_micros, total_cents) "
                   "VALUES (%s, %s, '2000-01-01', 'draft', 0, 0)", t.ids["invoice_id"], org_id)
    return t


def path_ids(t: Tenant, path: str) -> dict[str, str]:
    """The tenant's id for each ``{param}`` of ``path``: a run's agent is the installed agent, any
    other ``{agent_id}`` is the org's own listing, still pending review (so only the org sees it)."""
    names = re.findall(r"{(\w+)}", path)
    ids = dict(t.ids)
    ids["agent_id"] = t.agent_id if "/runs" in path else t.ids.get("listing_id", t.agent_id)
    return {name: ids[name] for name in names}
