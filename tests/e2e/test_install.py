"""Installing agents: SaaS and BYOC flows, config validation, roles, suspension, upgrade consent."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from datetime import UTC, datetime, timedelta

import pytest
from registry_support import make_manifest, publish

CONFIG_SCHEMA = {"type": "object", "required": ["billing_source"], "additionalProperties": False,
                 "properties": {"billing_source": {"type": "string", "minLength": 1},
                                "sensitivity": {"type": "number", "minimum": 1, "maximum": 10}}}


@pytest.fixture
def agent(make_org, make_user):
    """A published agent (from a developer org) and a platform admin."""
    dev, dev_org = make_org("Publisher")
    padmin = make_user("padmin", platform_admin=True)
    manifest = make_manifest(config=CONFIG_SCHEMA)
    agent_id = publish(dev, dev_org, padmin, manifest)
    return {"id": agent_id, "dev": dev, "dev_org": dev_org, "padmin": padmin, "manifest": manifest}


def _install(client, org_id, agent_id, **body):
    return client.post(f"/orgs/{org_id}/install", json={"agent_id": agent_id, "config": {"billing_source": "x.csv"},
                                                        **body})


def _dataplane(client, key):
    return client.post("/dataplanes/register", token=key,
                       json={"version": "0.1.0", "hostname": "node-1", "capabilities": ["langgraph"]})


def test_saas_install_register_ready_uninstall(agent, make_org, settings, container, anon):
    admin, org_id = make_org()
    resp = _install(admin, org_id, agent["id"], deployment_type="saas")
    assert resp.status == 201, resp
    dep = resp.body
    assert dep["status"] == "provisioning" and dep["dataplane_key"] is None  # SaaS keys never leave the platform
    assert dep["version"] == "1.0.0" and dep["granted_permissions"] == ["billing:read"]
    # The local provisioner hands the credential to the worker pool, owner-readable only.
    assigned = settings.dataplanes_dir / f"{dep['id']}.json"
    assert stat.S_IMODE(assigned.stat().st_mode) == 0o600
    key = json.loads(assigned.read_text())["api_key"]
    registered = _dataplane(anon, key)
    assert registered.status == 200, registered
    assert registered.body["status"] == "ready" and registered.body["manifest"]["name"] == agent["manifest"]["name"]
    assert registered.body["config"] == {"billing_source": "x.csv"}
    assert admin.get(f"/orgs/{org_id}/deployments/{dep['id']}").body["status"] == "ready"
    assert anon.post("/dataplanes/heartbeat", token=key).status == 200
    listing = admin.get(f"/agents/{agent['id']}").body
    assert listing["listing"]["install_count"] == 1
    gone = admin.delete(f"/orgs/{org_id}/deployments/{dep['id']}")
    assert gone.status == 200 and gone.body["status"] == "uninstalled"
    assert not assigned.exists()
    assert _dataplane(anon, key).status == 401
    assert admin.get(f"/agents/{agent['id']}").body["listing"]["install_count"] == 0
    actions = [e["action"] for e in admin.get(f"/orgs/{org_id}/audit?limit=200").body["items"]]
    for action in ("deployment.created", "deployment.provisioning", "deployment.ready", "deployment.uninstalled",
                   "api_key.created", "api_key.revoked"):
        assert action in actions


def test_byoc_install_shows_key_once_and_bundle(agent, make_org, anon):
    admin, org_id = make_org()
    dep = _install(admin, org_id, agent["id"], deployment_type="byoc").body
    key = dep["dataplane_key"]
    assert key and key.startswith("mk.")
    assert "dataplane_key" not in admin.get(f"/orgs/{org_id}/deployments/{dep['id']}").body
    assert _dataplane(anon, key).body["status"] == "ready"
    bundle = admin.get(f"/orgs/{org_id}/deployments/{dep['id']}/bundle")
    assert bundle.status == 200 and bundle.headers["Content-Type"].split(";")[0] == "application/gzip"
    names = tarfile.open(fileobj=io.BytesIO(bundle.data)).getnames()
    assert any(n.endswith("Chart.yaml") for n in names) and any(n.endswith("main.tf") for n in names)
    assert key.split(".")[2].encode() not in bundle.data
    # Asking for the secret rotates the key: the bundle's key works, the old one does not.
    with_secret = admin.get(f"/orgs/{org_id}/deployments/{dep['id']}/bundle?include_secret=true")
    assert with_secret.status == 200
    assert _dataplane(anon, key).status == 401
    assert b"mk." in gzip_text(with_secret.data)
    saas = _install(admin, org_id, agent["id"], deployment_type="saas").body
    assert admin.get(f"/orgs/{org_id}/deployments/{saas['id']}/bundle").status == 409


def gzip_text(data: bytes) -> bytes:
    out = b""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                out += tar.extractfile(member).read()
    return out


@pytest.mark.parametrize(("config", "path"), [
    ({}, "config"),
    ({"billing_source": ""}, "config.billing_source"),
    ({"billing_source": 5}, "config.billing_source"),
    ({"billing_source": "x", "sensitivity": 99}, "config.sensitivity"),
    ({"billing_source": "x", "extra": 1}, "config"),
])
def test_config_is_validated_against_the_manifest(agent, make_org, container, config, path):
    admin, org_id = make_org()
    with container.db.read() as tx:
        before = tx.fetch_val("SELECT count(*) FROM deployments")
    resp = admin.post(f"/orgs/{org_id}/install", json={"agent_id": agent["id"], "config": config})
    assert resp.status == 422, resp
    assert path in [d["path"] for d in resp.body["error"]["details"]]
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM deployments") == before


def test_install_rules(agent, make_org, member, make_user):
    admin, org_id = make_org()
    for role in ("operator", "approver", "viewer"):
        assert _install(member(admin, org_id, role), org_id, agent["id"]).status == 403
    assert _install(member(admin, org_id, "developer"), org_id, agent["id"]).status == 201
    assert _install(make_user(), org_id, agent["id"]).status == 404
    assert _install(admin, org_id, "agt_nope").status == 404
    assert _install(admin, org_id, agent["id"], version="9.9.9").status == 404
    assert _install(admin, org_id, agent["id"], deployment_type="onprem").status == 422
    saas_only = make_manifest(config=CONFIG_SCHEMA, deployment=["saas"])
    saas_agent = publish(agent["dev"], agent["dev_org"], agent["padmin"], saas_only)
    refused = _install(admin, org_id, saas_agent, deployment_type="byoc")
    assert refused.status == 422 and refused.body["error"]["details"][0]["path"] == "deployment_type"


def test_suspended_listing_cannot_be_installed(agent, make_org):
    admin, org_id = make_org()
    assert agent["padmin"].post(f"/admin/agents/{agent['id']}/suspend", json={"reason": "abuse"}).status == 200
    resp = _install(admin, org_id, agent["id"])
    assert resp.status == 409 and resp.body["error"]["code"] == "agent_suspended"


def test_upgrade_with_new_permissions_waits_for_admin_consent(agent, make_org, member, anon, settings):
    admin, org_id = make_org()
    dep = _install(admin, org_id, agent["id"]).body
    key = json.loads((settings.dataplanes_dir / f"{dep['id']}.json").read_text())["api_key"]
    _dataplane(anon, key)
    same_perms = make_manifest(agent["manifest"]["name"], "1.1.0", config=CONFIG_SCHEMA)
    more_perms = make_manifest(agent["manifest"]["name"], "2.0.0", config=CONFIG_SCHEMA,
                               permissions=["billing:read", "compute:write"],
                               tools=[{"name": "compute.stop", "description": "Stop a VM",
                                       "permissions": ["compute:write"]}])
    for manifest in (same_perms, more_perms):
        assert agent["dev"].post(f"/agents/{agent['id']}/versions", json={"manifest": manifest}).status == 201
        assert agent["padmin"].post(f"/admin/agents/{agent['id']}/approve",
                                    json={"version": manifest["version"]}).status == 200
    url = f"/orgs/{org_id}/deployments/{dep['id']}"
    plain = admin.post(f"{url}/upgrade", json={"version": "1.1.0"})
    assert plain.status == 200 and plain.body["version"] == "1.1.0" and plain.body["status"] == "ready"
    developer = member(admin, org_id, "developer")
    waiting = developer.post(f"{url}/upgrade", json={"version": "2.0.0"})
    assert waiting.status == 202, waiting
    assert waiting.body["status"] == "upgrade_pending_consent" and waiting.body["pending_permissions"] == ["compute:write"]
    assert waiting.body["version"] == "1.1.0"  # nothing changes before consent
    assert developer.post(f"{url}/upgrade/consent", json={"approve": True}).status == 403
    refused = admin.post(f"{url}/upgrade/consent", json={"approve": False, "comment": "not now"})
    assert refused.status == 200 and refused.body["status"] == "ready" and refused.body["version"] == "1.1.0"
    assert admin.post(f"{url}/upgrade/consent", json={"approve": True}).status == 409
    developer.post(f"{url}/upgrade", json={"version": "2.0.0"})
    granted = admin.post(f"{url}/upgrade/consent", json={"approve": True, "comment": "ok"})
    assert granted.body["version"] == "2.0.0" and granted.body["status"] == "ready"
    assert granted.body["granted_permissions"] == ["billing:read", "compute:write"]
    actions = [e["action"] for e in admin.get(f"/orgs/{org_id}/audit?limit=200").body["items"]]
    assert "deployment.consent_refused" in actions and "deployment.consent_granted" in actions


def test_missing_heartbeats_mark_unreachable_and_heartbeat_recovers(agent, make_org, anon, container, settings):
    admin, org_id = make_org()
    dep = _install(admin, org_id, agent["id"]).body
    key = json.loads((settings.dataplanes_dir / f"{dep['id']}.json").read_text())["api_key"]
    _dataplane(anon, key)
    moved = container.deployments.mark_unreachable(now=datetime.now(UTC) + timedelta(minutes=5))
    assert dep["id"] in moved
    assert admin.get(f"/orgs/{org_id}/deployments/{dep['id']}").body["status"] == "unreachable"
    assert anon.post("/dataplanes/heartbeat", token=key).body["status"] == "ready"


def test_dataplane_api_is_for_dataplane_keys_only(agent, make_org, anon):
    admin, org_id = make_org()
    member_key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "k", "role": "admin"}).body["key"]
    assert _dataplane(anon, member_key).status == 403
    assert _dataplane(anon, admin.token).status == 403
    dep = _install(admin, org_id, agent["id"], deployment_type="byoc").body
    # ... and a data-plane key reaches nothing else.
    assert anon.get(f"/orgs/{org_id}", token=dep["dataplane_key"]).status == 403
    assert anon.get(f"/orgs/{org_id}/deployments", token=dep["dataplane_key"]).status == 403


def test_deployments_list_pages_and_filters(agent, make_org):
    admin, org_id = make_org()
    ids = [_install(admin, org_id, agent["id"]).body["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = admin.get(f"/orgs/{org_id}/deployments?limit=2" + (f"&cursor={cursor}" if cursor else "")).body
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    admin.delete(f"/orgs/{org_id}/deployments/{ids[0]}")
    uninstalled = admin.get(f"/orgs/{org_id}/deployments?status=uninstalled").body["items"]
    assert [d["id"] for d in uninstalled] == [ids[0]]
    assert admin.get(f"/orgs/{org_id}/deployments?status=bogus").status == 422


def test_what_other_contexts_read_of_a_deployment(agent, make_org, container):
    admin, org_id = make_org()
    dep = _install(admin, org_id, agent["id"], deployment_type="byoc").body
    deployments = container.deployments
    with container.db.read() as tx:
        assert deployments.has_installed(tx, org_id, agent["id"])
    with container.db.transaction() as tx:
        found = deployments.runnable(tx, dep["id"])
        assert found is not None
        assert (found.org_id, found.agent_id, found.version, found.deployment_type, found.status) == (
            org_id, agent["id"], "1.0.0", "byoc", "provisioning")
        assert found.config == {"billing_source": "x.csv"} and found.granted_permissions == ["billing:read"]
        pending, missing = deployments.defer_runnable(tx, dep["id"]), deployments.defer_runnable(tx, "dep_nope")
        assert tx.fetch_val("SELECT 1") == 1  # the deferred reads travel with this statement
        assert pending.get() == found and missing.get() is None
        assert not deployments.has_installed(tx, org_id, "agt_other")
        manifest = container.catalog.version_manifest(tx, agent["id"], "1.0.0")
        assert manifest is not None
        assert manifest.name == agent["manifest"]["name"]
