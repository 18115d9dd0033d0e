"""Agent packages (issue 14): upload a version's code, refuse bad packages with nothing stored,
immutability, who may upload, the data plane's fetch by digest, and the task that names it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from registry_support import audit_actions, make_manifest, submit, unique_name
from runs_support import install_builtin
from support import packages

from shared.kernel.package_archive import MAX_PACKAGE_BYTES

GZIP = {"Content-Type": "application/gzip"}


def artifacts(settings: Any) -> set[Path]:
    """Every file in the local artifact store."""
    root = settings.artifacts_dir
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def developer(make_org, member, make_user):
    """A developer org with a pending listing (version 1.0.0) and a platform admin to approve it."""
    admin, org_id = make_org("Package Labs")
    dev = member(admin, org_id, "developer")
    manifest = make_manifest(unique_name("pkg"), deployment=["saas"])
    listing = submit(dev, org_id, manifest)["listing"]

    class Dev:
        pass

    d = Dev()
    d.admin, d.dev, d.org_id, d.manifest, d.agent_id = admin, dev, org_id, manifest, listing["id"]
    d.padmin = make_user("platform", platform_admin=True)
    d.url = f"/agents/{listing['id']}/versions/1.0.0/package"
    return d


def upload(client: Any, url: str, data: bytes, content_type: str = "application/gzip") -> Any:
    return client.put(url, data=data, headers={"Content-Type": content_type})


def test_a_package_is_stored_by_digest_and_shown_on_its_version(developer, settings, anon):
    data = packages.package(developer.manifest)
    sha = hashlib.sha256(data).hexdigest()
    resp = upload(developer.dev, developer.url, data)
    assert resp.status == 201, resp
    assert resp.body == {"agent_id": developer.agent_id, "version": "1.0.0", "sha256": sha, "size": len(data),
                         "kind": "tar.gz"}
    stored = settings.artifacts_dir / "sha256" / sha[:2] / sha
    assert stored.read_bytes() == data
    version = developer.dev.get(f"/agents/{developer.agent_id}/versions/1.0.0")
    assert version.body["package"] == {"sha256": sha, "size": len(data), "kind": "tar.gz"}, version
    assert "agent.package_uploaded" in audit_actions(developer.admin, developer.org_id)
    # A zip works too (another version: this one has its package).
    second = make_manifest(developer.manifest["name"], version="1.1.0", deployment=["saas"])
    assert developer.dev.post(f"/agents/{developer.agent_id}/versions", json={"manifest": second}).status == 201
    zipped = packages.zip_bytes(packages.project_files(second))
    resp = upload(developer.dev, f"/agents/{developer.agent_id}/versions/1.1.0/package", zipped, "application/zip")
    assert resp.status == 201 and resp.body["kind"] == "zip", resp


def test_the_same_bytes_again_are_200_and_other_bytes_409(developer, settings):
    data = packages.package(developer.manifest)
    assert upload(developer.dev, developer.url, data).status == 201
    again = upload(developer.dev, developer.url, data, "application/octet-stream")
    assert again.status == 200 and again.body["sha256"] == hashlib.sha256(data).hexdigest(), again
    before = artifacts(settings)
    other = packages.package(developer.manifest, root="other-root")
    resp = upload(developer.dev, developer.url, other)
    assert (resp.status, resp.body["error"]["code"]) == (409, "package_immutable"), resp
    assert artifacts(settings) == before


def test_a_reviewed_version_takes_no_first_package(developer, settings):
    resp = developer.padmin.post(f"/admin/agents/{developer.agent_id}/approve", json={})
    assert resp.status == 200, resp
    resp = upload(developer.dev, developer.url, packages.package(developer.manifest))
    assert (resp.status, resp.body["error"]["code"]) == (409, "package_immutable"), resp


BAD_PACKAGES = {
    "not an archive": (lambda m: b"just some text, not an archive", 422, "package_not_archive"),
    "over the limit": (lambda m: b"\x1f\x8b" + bytes(MAX_PACKAGE_BYTES), 413, "package_too_large"),
    "../ path": (packages.with_parent_path, 422, "package_path_escapes"),
    "absolute path": (packages.with_absolute_path, 422, "package_path_escapes"),
    "symlink": (packages.with_symlink, 422, "package_link"),
    "hardlink": (packages.with_hardlink, 422, "package_link"),
    "device file": (packages.with_device, 422, "package_special_file"),
    "fifo": (packages.with_fifo, 422, "package_special_file"),
    "no manifest": (packages.without_manifest, 422, "package_no_manifest"),
    "name mismatch": (lambda m: packages.package({**m, "name": "someone-else"}), 422, "package_manifest_mismatch"),
    "version mismatch": (lambda m: packages.package({**m, "version": "9.9.9"}), 422, "package_manifest_mismatch"),
    "other manifest": (lambda m: packages.package({**m, "permissions": ["billing:read", "compute:write"]}), 422,
                       "package_manifest_mismatch"),
}


@pytest.mark.parametrize("case", list(BAD_PACKAGES))
def test_bad_packages_are_refused_and_nothing_is_stored(developer, settings, case):
    build, status, code = BAD_PACKAGES[case]
    before = artifacts(settings)
    resp = upload(developer.dev, developer.url, build(developer.manifest))
    assert resp.status == status, resp
    assert resp.body["error"]["code"] == code, resp
    assert artifacts(settings) == before
    assert developer.dev.get(f"/agents/{developer.agent_id}/versions/1.0.0").body["package"] is None


def test_who_may_upload(developer, make_org, member, anon):
    data = packages.package(developer.manifest)
    stranger, _ = make_org("Elsewhere")
    resp = upload(stranger, developer.url, data)
    assert (resp.status, resp.body["error"]["code"]) == (404, "not_found"), resp  # no hint that it exists
    viewer = member(developer.admin, developer.org_id, "viewer")
    assert upload(viewer, developer.url, data).status == 403
    assert upload(anon, developer.url, data).status == 401
    assert upload(developer.dev, f"/agents/{developer.agent_id}/versions/7.7.7/package", data).status == 404
    assert upload(developer.dev, developer.url, data, "text/plain").status == 415
    assert upload(developer.admin, developer.url, data).status == 201  # an org admin may, as may a developer


def test_the_data_plane_fetches_its_package_and_the_task_names_it(developer, settings, make_org, anon, container):
    data = packages.package(developer.manifest)
    sha = hashlib.sha256(data).hexdigest()
    assert upload(developer.dev, developer.url, data).status == 201
    assert developer.padmin.post(f"/admin/agents/{developer.agent_id}/approve", json={}).status == 200
    customer, org_id = make_org("Customer")
    resp = customer.post(f"/orgs/{org_id}/install", json={"agent_id": developer.agent_id, "config": {}})
    assert resp.status == 201, resp
    deployment_id = resp.body["id"]
    key = json.loads((settings.dataplanes_dir / f"{deployment_id}.json").read_text())["api_key"]
    assert anon.post("/dataplanes/register", token=key, json={"version": "test", "hostname": "t",
                                                               "capabilities": ["langgraph"]}).status == 200

    fetched = anon.get(f"/dataplane/packages/{sha}", token=key)
    assert fetched.status == 200, fetched
    assert fetched.headers["Content-Type"] == "application/octet-stream"
    assert hashlib.sha256(fetched.data).hexdigest() == sha
    assert anon.get(f"/dataplane/packages/{'0' * 64}", token=key).status == 404
    assert anon.get("/dataplane/packages/not-a-digest", token=key).status == 404
    # Another org's data plane (it runs another agent) does not get it; nor does a user.
    other = install_builtin(container, make_org, anon, settings)
    assert anon.get(f"/dataplane/packages/{sha}", token=other.key).status == 404
    assert customer.get(f"/dataplane/packages/{sha}").status == 403

    run = customer.post(f"/agents/{developer.agent_id}/runs", json={"deployment_id": deployment_id, "inputs": {}})
    assert run.status == 201, run
    task = anon.get("/tasks/next?wait=5&lease_seconds=60", token=key)
    assert task.status == 200, task
    assert task.body["package"] == {"sha256": sha, "size": len(data), "kind": "tar.gz"}
    # A built-in agent's task has none.
    builtin_run = other.admin.post(f"/agents/{other.agent_id}/runs", json={"deployment_id": other.deployment_id,
                                                                             "inputs": {}})
    assert builtin_run.status == 201, builtin_run
    builtin_task = anon.get("/tasks/next?wait=5&lease_seconds=60", token=other.key)
    assert builtin_task.status == 200 and builtin_task.body["package"] is None, builtin_task


def test_the_database_keeps_a_package_whole_and_its_digest_hex(developer, container):
    """Migration 0011: a digest is 64 lowercase hex digits, and digest, size and kind go together."""
    from shared.kernel.db.database import QueryError

    for sha, size, kind in (("XYZ", 10, "zip"), ("a" * 64, None, "zip"), ("a" * 64, 10, "rar")):
        with pytest.raises(QueryError), container.db.transaction() as tx:
            tx.execute("UPDATE agent_versions SET package_sha256 = %s, package_size = %s, package_kind = %s "
                       "WHERE agent_id = %s", sha, size, kind, developer.agent_id)
