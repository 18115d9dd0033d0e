"""The developer portal and moderation: validation, submission, versions, roles, visibility, audit, seeding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from registry_support import (
    audit_actions,
    count_rows,
    make_manifest,
    publish,
    submit,
    unique_name,
)

from shared.catalog.manifest import AgentManifest
from shared.catalog.service import PLATFORM_ORG_NAME, PLATFORM_USER_EMAIL, CatalogService
from shared.kernel.errors import Conflict, NotFound


def _without(field: str) -> dict[str, Any]:
    manifest = make_manifest()
    del manifest[field]
    return manifest


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    manifest = make_manifest()
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return manifest


# (case, manifest object, expected problem path). Each is rejected with that path, and nothing is stored.
INVALID_MANIFESTS: list[tuple[str, Any, str]] = [
    ("missing name", _without("name"), "name"),
    ("name not a slug", make_manifest(name="Bad_Name"), "name"),
    ("name too short", make_manifest(name="ab"), "name"),
    ("version not semver", make_manifest(version="1.0"), "version"),
    ("version with v prefix", make_manifest(version="v1.0.0"), "version"),
    ("version leading zero", make_manifest(version="01.0.0"), "version"),
    ("missing display_name", _without("display_name"), "display_name"),
    ("blank description", make_manifest(description="   "), "description"),
    ("unknown category", make_manifest(category="gaming"), "category"),
    ("duplicate tag", make_manifest(tags=["cost", "cost"]), "tags[1]"),
    ("uppercase tag", make_manifest(tags=["FinOps"]), "tags[0]"),
    ("unknown framework", _nested(("runtime", "framework"), "crewai"), "runtime.framework"),
    ("bad entrypoint", _nested(("runtime", "entrypoint"), "not an entrypoint"), "runtime.entrypoint"),
    ("zero timeout", _nested(("runtime", "timeout_seconds"), 0), "runtime.timeout_seconds"),
    ("bad cpu", _nested(("runtime", "resources"), {"cpu": "lots"}), "runtime.resources.cpu"),
    ("bad image", _nested(("runtime", "image"), "Not An Image!"), "runtime.image"),
    ("inputs not an object schema", make_manifest(inputs={"type": "array"}), "inputs.type"),
    ("config invalid JSON Schema", make_manifest(config={"type": "object", "properties": {"x": {"type": 5}}}),
     "config.properties.x.type"),
    ("malformed permission", make_manifest(permissions=["Billing Read"], tools=[]), "permissions[0]"),
    ("tool permission undeclared", make_manifest(tools=[{"name": "compute.stop", "description": "Stop",
                                                         "permissions": ["compute:write"]}]),
     "tools[0].permissions[0]"),
    ("duplicate tool", make_manifest(tools=[{"name": "a.b", "description": "x"}, {"name": "a.b", "description": "y"}]),
     "tools[1].name"),
    ("unknown constraint", make_manifest(constraints=["be-nice"]), "constraints[0]"),
    ("read-only with write permission", make_manifest(constraints=["read-only"], permissions=["compute:write"],
                                                      tools=[]), "constraints[0]"),
    ("valued constraint without value", make_manifest(constraints=["max-run-cost-usd"]), "constraints[0]"),
    ("namespaces without level 3", make_manifest(memory={"levels": [1], "namespaces": ["cost_anomalies"]}),
     "memory.namespaces"),
    ("memory level 6", make_manifest(memory={"levels": [6]}), "memory.levels[0]"),
    ("negative price", _nested(("pricing", "base_usd"), "-1"), "pricing.base_usd"),
    ("price finer than a micro-dollar", _nested(("pricing", "per_record_usd"), "0.0000001"),
     "pricing.per_record_usd"),
    ("missing price", make_manifest(pricing={"base_usd": "1", "per_record_usd": "0"}), "pricing.per_cpu_hour_usd"),
    ("no deployment type", make_manifest(deployment=[]), "deployment"),
    ("unknown deployment type", make_manifest(deployment=["onprem"]), "deployment[0]"),
    ("unknown top-level field", make_manifest(pricng={}), "pricng"),
    ("wrong type for tags", make_manifest(tags="finops"), "tags"),
]

# Documents sent as text (manifest_yaml): problems of the whole document have an empty path.
INVALID_DOCUMENTS: list[tuple[str, str, str]] = [
    ("not YAML", "name: [unclosed", ""),
    ("duplicate key", yaml.safe_dump(make_manifest()) + "name: again\n", ""),
    ("YAML alias", "a: &x [1]\nb: *x\n", ""),
    ("a list, not a mapping", "- 1\n- 2\n", ""),
    ("YAML with a bad field", yaml.safe_dump(make_manifest(version="latest")), "version"),
]


@pytest.fixture
def developer_org(make_org, member):
    admin, org_id = make_org("Publisher")
    return admin, member(admin, org_id, "developer"), org_id


@pytest.fixture
def padmin(make_user):
    return make_user("platform", platform_admin=True)


@pytest.mark.parametrize(("case", "manifest", "path"), INVALID_MANIFESTS, ids=[c[0] for c in INVALID_MANIFESTS])
def test_invalid_manifest_is_rejected_with_its_path_and_nothing_is_stored(container, developer_org, case, manifest,
                                                                          path):
    _, dev, org_id = developer_org
    before = count_rows(container)

    verdict = dev.post("/manifests/validate", json={"manifest": manifest})
    assert verdict.status == 200, verdict
    assert verdict.body["valid"] is False
    assert path in [p["path"] for p in verdict.body["problems"]], (case, verdict.body["problems"])
    assert verdict.body["manifest"] is None

    resp = dev.post("/agents", json={"org_id": org_id, "manifest": manifest})
    assert resp.status == 422, (case, resp)
    assert resp.body["error"]["code"] == "invalid_manifest"
    assert f"manifest.{path}" in [d["path"] for d in resp.body["error"]["details"]], (case, resp.body)
    assert f"manifest.{path}" in resp.body["error"]["message"]
    assert count_rows(container) == before


@pytest.mark.parametrize(("case", "document", "path"), INVALID_DOCUMENTS, ids=[c[0] for c in INVALID_DOCUMENTS])
def test_invalid_document_is_rejected_and_nothing_is_stored(container, developer_org, case, document, path):
    _, dev, org_id = developer_org
    before = count_rows(container)
    verdict = dev.post("/manifests/validate", json={"manifest_yaml": document})
    assert verdict.status == 200 and verdict.body["valid"] is False, (case, verdict)
    assert path in [p["path"] for p in verdict.body["problems"]], (case, verdict.body)
    resp = dev.post("/agents", json={"org_id": org_id, "manifest_yaml": document})
    assert resp.status == 422, (case, resp)
    expected = f"manifest_yaml.{path}" if path else "manifest_yaml"
    assert expected in [d["path"] for d in resp.body["error"]["details"]], (case, resp.body)
    assert count_rows(container) == before


def test_invalid_manifest_table_is_large_enough():
    assert len(INVALID_MANIFESTS) + len(INVALID_DOCUMENTS) >= 25


def test_validate_returns_normalized_manifest_and_micros(make_user):
    user = make_user("validator")
    manifest = make_manifest(pricing={"base_usd": "0.50", "per_record_usd": 0.001, "per_cpu_hour_usd": "0.5",
                                      "subscription_monthly_usd": "49"})
    manifest["runtime"].pop("resources")
    resp = user.post("/manifests/validate", json={"manifest": manifest})
    assert resp.status == 200, resp
    body = resp.body
    assert body["valid"] is True and body["problems"] == []
    assert body["pricing_micros"] == {"base_micros": 500_000, "per_record_micros": 1_000,
                                      "per_cpu_hour_micros": 500_000, "subscription_monthly_micros": 49_000_000}
    assert body["pricing_model"] == "hybrid"
    assert body["manifest"]["runtime"]["resources"] == {"cpu": "1", "memory": "512Mi"}  # defaults filled in
    assert AgentManifest.model_validate(body["manifest"]).name == manifest["name"]


def test_validate_accepts_yaml_text_and_needs_auth(anon, make_user):
    text = Path("agents/cost-anomaly/manifest.yaml").read_text()
    resp = make_user("yaml").post("/manifests/validate", json={"manifest_yaml": text})
    assert resp.status == 200 and resp.body["valid"], resp
    assert resp.body["manifest"]["name"] == "cost-anomaly-detector"
    assert anon.post("/manifests/validate", json={"manifest_yaml": text}).status == 401


def test_validate_body_needs_exactly_one_form(make_user):
    user = make_user("v")
    assert user.post("/manifests/validate", json={}).status == 422
    both = user.post("/manifests/validate", json={"manifest": make_manifest(), "manifest_yaml": "name: x"})
    assert both.status == 422
    assert user.post("/manifests/validate", json={"manifest": "name: x"}).status == 422


def test_manifest_schema_is_published(anon):
    resp = anon.get("/manifests/schema")
    assert resp.status == 200
    assert resp.body["$schema"].startswith("https://json-schema.org/draft/2020-12")
    assert {"name", "version", "pricing", "deployment"} <= set(resp.body["required"])


def test_cli_manifest_validate(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(make_manifest()))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(make_manifest(version="one")))
    ok = subprocess.run([sys.executable, "-m", "functions.cli", "manifest", "validate", str(good)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["valid"] is True
    failed = subprocess.run([sys.executable, "-m", "functions.cli", "manifest", "validate", str(bad)],
                            capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    verdict = json.loads(failed.stdout)
    assert verdict["valid"] is False and verdict["problems"][0]["path"] == "version"
    assert "version:" in failed.stderr
    missing = subprocess.run([sys.executable, "-m", "functions.cli", "manifest", "validate",
                              str(tmp_path / "absent.yaml")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2


# -- submission and roles ----------------------------------------------------------------


def test_submit_creates_a_pending_listing(container, developer_org):
    admin, dev, org_id = developer_org
    manifest = make_manifest(tags=["finops", "alerts"])
    body = submit(dev, org_id, manifest)
    listing, version = body["listing"], body["version"]
    assert listing["status"] == "pending_review"
    assert listing["name"] == manifest["name"] and listing["publisher_org_id"] == org_id
    assert listing["publisher_name"] == "Publisher"
    assert listing["latest_version"] is None and listing["published_at"] is None
    assert listing["pricing_model"] == "usage"
    assert listing["pricing"]["per_record_micros"] == 1_000
    assert listing["deployment_types"] == ["saas", "byoc"]
    assert listing["install_count"] == 0 and listing["rating_count"] == 0
    assert version["version"] == "1.0.0" and version["status"] == "pending_review"
    assert version["permission_diff"] == {"previous_version": None, "added": ["billing:read"], "removed": [],
                                          "unchanged": [], "needs_consent": True}
    assert "agent.submitted" in audit_actions(admin, org_id)


@pytest.mark.parametrize("role", ["admin", "developer"])
def test_admins_and_developers_may_submit(make_org, member, role):
    admin, org_id = make_org()
    caller = admin if role == "admin" else member(admin, org_id, role)
    assert caller.post("/agents", json={"org_id": org_id, "manifest": make_manifest()}).status == 201


@pytest.mark.parametrize("role", ["operator", "approver", "viewer"])
def test_other_roles_may_not_submit(container, make_org, member, role):
    admin, org_id = make_org()
    caller = member(admin, org_id, role)
    before = count_rows(container)
    resp = caller.post("/agents", json={"org_id": org_id, "manifest": make_manifest()})
    assert resp.status == 403, resp
    assert count_rows(container) == before


def test_non_member_gets_404_for_submit(make_org, make_user):
    _, org_id = make_org()
    resp = make_user("stranger").post("/agents", json={"org_id": org_id, "manifest": make_manifest()})
    assert resp.status == 404
    resp = make_user("stranger").post("/agents", json={"org_id": "org_does_not_exist", "manifest": make_manifest()})
    assert resp.status == 404


def test_api_key_of_a_developer_role_may_submit(make_org):
    admin, org_id = make_org()
    key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "ci", "role": "developer"}).body["key"]
    resp = admin.post("/agents", json={"org_id": org_id, "manifest": make_manifest()}, token=key)
    assert resp.status == 201, resp


def test_name_is_unique(developer_org, make_org):
    _, dev, org_id = developer_org
    manifest = make_manifest()
    submit(dev, org_id, manifest)
    again = dev.post("/agents", json={"org_id": org_id, "manifest": manifest})
    assert again.status == 409 and again.body["error"]["code"] == "name_taken"
    other_admin, other_org = make_org()
    elsewhere = other_admin.post("/agents", json={"org_id": other_org, "manifest": make_manifest(name=manifest["name"])})
    assert elsewhere.status == 409


def test_submit_is_idempotent_with_a_key(container, developer_org):
    _, dev, org_id = developer_org
    body = {"org_id": org_id, "manifest": make_manifest()}
    first = dev.post("/agents", json=body, headers={"Idempotency-Key": "submit-1"})
    before = count_rows(container)
    second = dev.post("/agents", json=body, headers={"Idempotency-Key": "submit-1"})
    assert first.status == second.status == 201
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.body["listing"]["id"] == first.body["listing"]["id"]
    assert count_rows(container) == before


# -- versions ----------------------------------------------------------------------------------


def test_version_rules(container, developer_org, padmin):
    admin, dev, org_id = developer_org
    manifest = make_manifest(version="1.2.0")
    agent_id = publish(dev, org_id, padmin, manifest)
    url = f"/agents/{agent_id}/versions"

    duplicate = dev.post(url, json={"manifest": manifest})
    assert duplicate.status == 409 and duplicate.body["error"]["code"] == "version_exists"
    same_precedence = dev.post(url, json={"manifest": {**manifest, "version": "1.2.0+build.7"}})
    assert same_precedence.status == 409 and same_precedence.body["error"]["code"] == "version_exists"
    before = count_rows(container)
    for lower in ("1.1.9", "1.2.0-rc.1", "0.9.0"):
        resp = dev.post(url, json={"manifest": {**manifest, "version": lower}})
        assert resp.status == 409, (lower, resp)
        assert resp.body["error"]["code"] == "version_not_newer"
        assert "1.2.0" in resp.body["error"]["message"]
    renamed = dev.post(url, json={"manifest": {**manifest, "name": unique_name(), "version": "1.3.0"}})
    assert renamed.status == 422 and renamed.body["error"]["details"][0]["path"] == "manifest.name"
    assert dev.post(url, json={"manifest": {**manifest, "version": "oops"}}).status == 422
    assert count_rows(container) == before

    # A new version asking for more (and fewer) permissions: the diff is recorded and returned.
    upgraded = make_manifest(name=manifest["name"], version="1.10.0",
                             permissions=["billing:read", "compute:write"],
                             tools=[{"name": "compute.stop", "description": "Stop idle VMs",
                                     "permissions": ["compute:write"]}])
    resp = dev.post(url, json={"manifest": upgraded})
    assert resp.status == 201, resp
    diff = resp.body["version"]["permission_diff"]
    assert diff == {"previous_version": "1.2.0", "added": ["compute:write"], "removed": [],
                    "unchanged": ["billing:read"], "needs_consent": True}
    assert resp.body["version"]["status"] == "pending_review"
    # The published listing keeps showing 1.2.0 until 1.10.0 is approved.
    assert resp.body["listing"]["latest_version"] == "1.2.0" and resp.body["listing"]["status"] == "approved"

    detail = dev.get(f"/agents/{agent_id}").body
    assert [v["version"] for v in detail["versions"]] == ["1.10.0", "1.2.0"]
    assert detail["versions"][0]["permission_diff"]["added"] == ["compute:write"]
    stored = dev.get(f"/agents/{agent_id}/versions/1.10.0").body
    assert stored["permission_diff"]["added"] == ["compute:write"]
    assert stored["manifest"]["permissions"] == ["billing:read", "compute:write"]

    narrowed = make_manifest(name=manifest["name"], version="2.0.0", permissions=[], tools=[])
    diff = dev.post(url, json={"manifest": narrowed}).body["version"]["permission_diff"]
    assert diff == {"previous_version": "1.10.0", "added": [], "removed": ["billing:read", "compute:write"],
                    "unchanged": [], "needs_consent": False}
    assert "agent.version_submitted" in audit_actions(admin, org_id)


def test_only_the_publisher_may_add_versions(developer_org, padmin, make_org, member):
    _, dev, org_id = developer_org
    manifest = make_manifest()
    agent_id = publish(dev, org_id, padmin, manifest)
    later = {"manifest": {**manifest, "version": "1.1.0"}}
    other_admin, _ = make_org()
    assert other_admin.post(f"/agents/{agent_id}/versions", json=later).status == 404
    viewer = member(developer_org[0], org_id, "viewer")
    assert viewer.post(f"/agents/{agent_id}/versions", json=later).status == 403
    assert dev.post("/agents/agt_unknown/versions", json=later).status == 404


# -- moderation, visibility --------------------------------------------------------------------------


def _catalog_names(client, q: str) -> list[str]:
    resp = client.get("/agents", query_string={"q": q, "limit": 100})
    assert resp.status == 200, resp
    return [item["name"] for item in resp.body["items"]]


def test_submit_approve_visible_then_suspend_hidden(container, developer_org, padmin, make_user):
    admin, dev, org_id = developer_org
    word = "moderationprobe" + unique_name("x").replace("-", "")
    manifest = make_manifest(description=f"Checks {word} daily.")
    agent_id = submit(dev, org_id, manifest)["listing"]["id"]
    outsider = make_user("shopper")

    assert _catalog_names(outsider, word) == []
    assert outsider.get(f"/agents/{agent_id}").status == 404
    assert dev.get(f"/agents/{agent_id}").status == 200  # the publisher sees its pending listing
    assert padmin.get(f"/agents/{agent_id}").status == 200

    approved = padmin.post(f"/admin/agents/{agent_id}/approve", json={"note": "looks good"})
    assert approved.status == 200, approved
    assert approved.body["status"] == "approved" and approved.body["latest_version"] == "1.0.0"
    assert approved.body["published_at"] is not None
    assert _catalog_names(outsider, word) == [manifest["name"]]
    detail = outsider.get(f"/agents/{agent_id}").body
    assert detail["manifest"]["name"] == manifest["name"]
    assert detail["rating"] == {"avg": 0.0, "count": 0, "distribution": {str(s): 0 for s in range(1, 6)}}
    assert outsider.get(f"/agents/{manifest['name']}").body["listing"]["id"] == agent_id  # by name too
    assert container.catalog.installable_version(agent_id).version == "1.0.0"

    suspended = padmin.post(f"/admin/agents/{agent_id}/suspend", json={"reason": "malware report"})
    assert suspended.status == 200 and suspended.body["status"] == "suspended"
    assert suspended.body["status_reason"] == "malware report"
    assert _catalog_names(outsider, word) == []
    assert outsider.get(f"/agents/{agent_id}").status == 404
    assert outsider.get(f"/agents/{agent_id}/versions/1.0.0").status == 404
    assert dev.get(f"/agents/{agent_id}").body["listing"]["status"] == "suspended"
    with pytest.raises(Conflict):
        container.catalog.installable_version(agent_id)
    assert padmin.post(f"/admin/agents/{agent_id}/suspend", json={"reason": "again"}).status == 409

    reinstated = padmin.post(f"/admin/agents/{agent_id}/approve", json={})
    assert reinstated.status == 200 and reinstated.body["status"] == "approved"
    assert _catalog_names(outsider, word) == [manifest["name"]]
    actions = audit_actions(admin, org_id)
    for action in ("agent.submitted", "agent.approved", "agent.suspended", "agent.reinstated"):
        assert action in actions
    assert admin.get(f"/orgs/{org_id}/audit/verify").body["ok"] is True


def test_reject_needs_a_reason_and_hides_the_listing(container, developer_org, padmin, make_user):
    admin, dev, org_id = developer_org
    word = "rejectprobe" + unique_name("x").replace("-", "")
    manifest = make_manifest(description=f"Does {word}.")
    agent_id = submit(dev, org_id, manifest)["listing"]["id"]
    assert padmin.post(f"/admin/agents/{agent_id}/reject", json={}).status == 422
    assert padmin.post(f"/admin/agents/{agent_id}/reject", json={"reason": "  "}).status == 422
    rejected = padmin.post(f"/admin/agents/{agent_id}/reject", json={"reason": "entrypoint missing"})
    assert rejected.status == 200 and rejected.body["status"] == "rejected"
    assert rejected.body["status_reason"] == "entrypoint missing"
    assert _catalog_names(make_user("shopper"), word) == []
    assert make_user("shopper").get(f"/agents/{agent_id}").status == 404
    with pytest.raises(NotFound):
        container.catalog.installable_version(agent_id)
    versions = dev.get(f"/agents/{agent_id}").body["versions"]
    assert versions[0]["status"] == "rejected" and versions[0]["review_reason"] == "entrypoint missing"
    assert padmin.post(f"/admin/agents/{agent_id}/approve", json={}).status == 409  # nothing pending

    # Resubmitting a fixed version puts the listing back into review; the rejected number is burned.
    assert dev.post(f"/agents/{agent_id}/versions", json={"manifest": manifest}).status == 409
    resubmitted = dev.post(f"/agents/{agent_id}/versions", json={"manifest": {**manifest, "version": "1.0.1"}})
    assert resubmitted.status == 201 and resubmitted.body["listing"]["status"] == "pending_review"
    assert padmin.post(f"/admin/agents/{agent_id}/approve", json={}).body["latest_version"] == "1.0.1"
    actions = audit_actions(admin, org_id)
    assert "agent.rejected" in actions and "agent.approved" in actions


def test_new_versions_need_approval_before_they_become_latest(container, developer_org, padmin, make_user):
    admin, dev, org_id = developer_org
    manifest = make_manifest(display_name="Version One")
    agent_id = publish(dev, org_id, padmin, manifest)
    shopper = make_user("shopper")
    v2 = {**manifest, "version": "2.0.0", "display_name": "Version Two"}
    assert dev.post(f"/agents/{agent_id}/versions", json={"manifest": v2}).status == 201
    public = shopper.get(f"/agents/{agent_id}").body
    assert public["listing"]["latest_version"] == "1.0.0" and public["listing"]["display_name"] == "Version One"
    assert [v["version"] for v in public["versions"]] == ["1.0.0"]  # the pending version is not public
    assert shopper.get(f"/agents/{agent_id}/versions/2.0.0").status == 404
    with pytest.raises(NotFound):
        container.catalog.installable_version(agent_id, "2.0.0")
    assert padmin.post(f"/admin/agents/{agent_id}/approve", json={"version": "9.9.9"}).status == 404
    approved = padmin.post(f"/admin/agents/{agent_id}/approve", json={"version": "2.0.0"})
    assert approved.status == 200 and approved.body["latest_version"] == "2.0.0"
    assert approved.body["display_name"] == "Version Two"
    assert padmin.post(f"/admin/agents/{agent_id}/approve", json={"version": "2.0.0"}).status == 409
    assert container.catalog.installable_version(agent_id).version == "2.0.0"
    assert container.catalog.installable_version(agent_id, "1.0.0").version == "1.0.0"
    # A rejected later version leaves the published one in place.
    dev.post(f"/agents/{agent_id}/versions", json={"manifest": {**manifest, "version": "2.1.0"}})
    rejected = padmin.post(f"/admin/agents/{agent_id}/reject", json={"reason": "breaks config"})
    assert rejected.body["status"] == "approved" and rejected.body["latest_version"] == "2.0.0"
    actions = audit_actions(admin, org_id)
    assert "agent.version_approved" in actions and "agent.version_rejected" in actions


def test_prerelease_does_not_become_latest_while_a_release_exists(developer_org, padmin):
    _, dev, org_id = developer_org
    manifest = make_manifest()
    agent_id = publish(dev, org_id, padmin, manifest)
    dev.post(f"/agents/{agent_id}/versions", json={"manifest": {**manifest, "version": "2.0.0-beta.1"}})
    listing = padmin.post(f"/admin/agents/{agent_id}/approve", json={}).body
    assert listing["latest_version"] == "1.0.0"


@pytest.mark.parametrize("action", ["approve", "reject", "suspend"])
def test_only_platform_admins_moderate(developer_org, make_user, action):
    admin, dev, org_id = developer_org
    agent_id = submit(dev, org_id, make_manifest())["listing"]["id"]
    body = {"reason": "because"} if action != "approve" else {}
    for caller in (admin, dev, make_user("someone")):
        resp = caller.post(f"/admin/agents/{agent_id}/{action}", json=body)
        assert resp.status == 403, (action, resp)
    assert dev.get(f"/agents/{agent_id}").body["listing"]["status"] == "pending_review"


def test_moderating_an_unknown_agent_is_404(padmin):
    assert padmin.post("/admin/agents/agt_nope/approve", json={}).status == 404
    assert padmin.post("/admin/agents/agt_nope/suspend", json={"reason": "x"}).status == 404


def test_developer_listings_show_every_status_to_members_only(developer_org, padmin, member, make_org):
    admin, dev, org_id = developer_org
    pending = submit(dev, org_id, make_manifest())["listing"]["id"]
    approved = publish(dev, org_id, padmin, make_manifest())
    rejected = submit(dev, org_id, make_manifest())["listing"]["id"]
    padmin.post(f"/admin/agents/{rejected}/reject", json={"reason": "no"})
    dev.post(f"/agents/{approved}/versions", json={"manifest": make_manifest(
        name=dev.get(f"/agents/{approved}").body["listing"]["name"], version="1.1.0")})
    viewer = member(admin, org_id, "viewer")
    resp = viewer.get(f"/developers/{org_id}/agents")
    assert resp.status == 200, resp
    by_id = {item["id"]: item for item in resp.body["items"]}
    assert {pending, approved, rejected} <= set(by_id)
    assert by_id[pending]["status"] == "pending_review" and by_id[rejected]["status"] == "rejected"
    assert by_id[approved]["pending_versions"] == ["1.1.0"]
    page = viewer.get(f"/developers/{org_id}/agents", query_string={"limit": 2})
    rest = viewer.get(f"/developers/{org_id}/agents", query_string={"limit": 2, "cursor": page.body["next_cursor"]})
    ids = [i["id"] for i in page.body["items"] + rest.body["items"]]
    assert len(ids) == len(set(ids)) == 3
    outsider, _ = make_org()
    assert outsider.get(f"/developers/{org_id}/agents").status == 404


def test_version_lookup(developer_org, padmin, make_user):
    _, dev, org_id = developer_org
    manifest = make_manifest(version="1.0.0+build.5")
    agent_id = publish(dev, org_id, padmin, manifest)
    shopper = make_user("shopper")
    resp = shopper.get(f"/agents/{agent_id}/versions/1.0.0+build.5")
    assert resp.status == 200 and resp.body["manifest"]["version"] == "1.0.0+build.5"
    assert shopper.get(f"/agents/{agent_id}/versions/3.0.0").status == 404
    assert shopper.get("/agents/agt_missing").status == 404
    assert shopper.get("/agents/no-such-agent").status == 404


def test_lookups_for_other_contexts(container, developer_org, padmin):
    """What deployments and runs read of the catalog, inside their own transactions."""
    _, dev, org_id = developer_org
    manifest = make_manifest()
    agent_id = publish(dev, org_id, padmin, manifest)
    with container.db.transaction() as tx:
        found = container.catalog.version_manifest(tx, agent_id, "1.0.0")
        assert found is not None and found.name == manifest["name"]
        assert container.catalog.version_manifest(tx, agent_id, "9.9.9") is None
        assert container.catalog.agent_id_of(tx, agent_id) == agent_id
        assert container.catalog.agent_id_of(tx, manifest["name"]) == agent_id
        assert container.catalog.agent_id_of(tx, "agt_missing") is None
        assert container.catalog.agent_id_of(tx, "no-such-agent") is None
    with container.db.read() as tx:  # and in a read, as the runs list asks
        assert container.catalog.agent_id_of(tx, manifest["name"]) == agent_id
        assert container.catalog.version_manifest(tx, agent_id, "1.0.0") is not None


# -- built-in agents ----------------------------------------------------------------------------------


def test_builtin_agents_are_published_idempotently(container, make_user, tmp_path):
    name = unique_name("builtin")
    folder = tmp_path / "builtin" / "sample"
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(yaml.safe_dump(make_manifest(name=name)))
    service = CatalogService(container.db, container.audit, container.orgs, builtin_agents_dir=tmp_path / "builtin")
    first = service.publish_builtin_agents()
    assert first.published == [name]
    second = service.publish_builtin_agents()
    assert second.unchanged == [name] and not second.published
    shopper = make_user("shopper")
    listing = shopper.get(f"/agents/{name}").body["listing"]
    assert listing["status"] == "approved" and listing["publisher_name"] == PLATFORM_ORG_NAME

    (folder / "manifest.yaml").write_text(yaml.safe_dump(make_manifest(name=name, version="1.1.0")))
    third = service.publish_builtin_agents()
    assert third.updated == [name]
    assert shopper.get(f"/agents/{name}").body["listing"]["latest_version"] == "1.1.0"
    with container.db.transaction() as tx:
        owners = tx.fetch_all("SELECT o.id FROM orgs o JOIN users u ON u.id = o.created_by "
                              "WHERE u.email = %s AND o.name = %s", PLATFORM_USER_EMAIL, PLATFORM_ORG_NAME)
    assert len(owners) == 1


def test_the_repository_builtin_agents_are_published(container, make_user):
    report = container.catalog.publish_builtin_agents()
    assert "cost-anomaly-detector" in report.published + report.unchanged + report.updated
    again = container.catalog.publish_builtin_agents()
    assert "cost-anomaly-detector" in again.unchanged
    listing = make_user("shopper").get("/agents/cost-anomaly-detector").body["listing"]
    assert listing["status"] == "approved" and listing["category"] == "finops"
    assert listing["pricing"] == {"base_micros": 500_000, "per_record_micros": 1_000,
                                  "per_cpu_hour_micros": 500_000, "subscription_monthly_micros": 0}
    with pytest.raises(NotFound):
        container.catalog.installable_version("cost-anomaly-detector")  # installs use the id, not the name
    manifest = container.catalog.installable_version(listing["id"])
    assert manifest.runtime.entrypoint == "cost_anomaly.graph:build_graph"
