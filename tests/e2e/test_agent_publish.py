"""``marketplace agent publish`` (issue 14 item 1) against the gateway served on a loopback port:
a new listing, a new version, a version already published refused, a name another publisher holds
refused; the package upload when the platform has the endpoint (issue 14 item 2)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from functions.cli import cli
from functions.cli_config import ClientConfig


def invoke(*args: str | Path) -> tuple[int, Result]:
    """``marketplace ARGS``: its exit status (as ``main()`` returns it) and the result."""
    result = CliRunner().invoke(cli, [str(a) for a in args], standalone_mode=False, catch_exceptions=False)
    return (result.return_value if isinstance(result.return_value, int) else 0), result


@pytest.fixture
def signed_in(live_url: str, make_org, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """The CLI's stored login of a fresh org's admin (as ``marketplace login`` leaves it)."""
    admin, org_id = make_org("Agent developers")
    monkeypatch.setenv("MARKETPLACE_CONFIG_DIR", str(tmp_path / "config"))
    ClientConfig(url=live_url, email=admin.email, access_token=admin.token).save()
    return admin, org_id


def new_project(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    code, result = invoke("agent", "init", root)
    assert code == 0, result.output
    return root


def set_version(root: Path, version: str, change: Callable[[dict], None] = lambda m: None) -> None:
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    manifest["version"] = version
    change(manifest)
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', f'version = "{version}"', 1))


def test_publish_submits_a_new_listing_then_a_new_version(signed_in, tmp_path: Path) -> None:
    admin, org_id = signed_in
    name = f"publish-demo-{uuid.uuid4().hex[:8]}"
    root = new_project(tmp_path, name)

    code, result = invoke("agent", "publish", root, "--org", org_id, "--json")
    listing = admin.get(f"/agents/{name}").body["listing"]
    assert listing["publisher_org_id"] == org_id and listing["status"] == "pending_review"
    version = admin.get(f"/agents/{listing['id']}/versions/0.1.0").body
    assert version["status"] == "pending_review" and version["manifest"]["name"] == name
    archive = root / "dist" / f"{name}-0.1.0.tar.gz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()

    assert code == 0, result.output
    published = json.loads(result.stdout)
    assert published["listing_id"] == listing["id"] and published["version"] == "0.1.0"
    assert published["status"] == "pending_review" and published["new_listing"] is True
    assert published["sha256"] == digest and published["package"]["sha256"] == digest

    # The same version again: refused, whatever its package.
    code, result = invoke("agent", "publish", root, "--org", org_id)
    assert code == 1 and "already published" in result.stderr

    set_version(root, "0.2.0")
    code, result = invoke("agent", "publish", root, "--org", org_id, "--json")
    assert code == 0, result.output
    second = json.loads(result.stdout)
    assert second["listing_id"] == listing["id"] and second["version"] == "0.2.0" and second["new_listing"] is False


def test_a_version_already_published_with_another_manifest_is_refused(signed_in, tmp_path: Path) -> None:
    admin, org_id = signed_in
    name = f"immutable-{uuid.uuid4().hex[:8]}"
    root = new_project(tmp_path, name)
    invoke("agent", "publish", root, "--org", org_id)  # the upload may be missing: the version exists
    set_version(root, "0.1.0", lambda m: m.update(description="Changed after publishing."))

    code, result = invoke("agent", "publish", root, "--org", org_id)
    assert code == 1
    assert "version 0.1.0 already exists" in result.stderr and "raise the version" in result.stderr
    assert "Traceback" not in result.output
    listing = admin.get(f"/agents/{name}").body
    assert [v["version"] for v in listing["versions"]] == ["0.1.0"]


def test_a_name_another_publisher_holds_is_refused(signed_in, make_org, tmp_path: Path) -> None:
    _, org_id = signed_in
    other_admin, other_org = make_org("Someone else")
    name = f"taken-{uuid.uuid4().hex[:8]}"
    manifest = yaml.safe_load((new_project(tmp_path, name) / "manifest.yaml").read_text())
    resp = other_admin.post("/agents", json={"org_id": other_org, "manifest": manifest})
    assert resp.status == 201, resp

    code, result = invoke("agent", "publish", tmp_path / name, "--org", org_id)
    assert code == 1 and "already exists" in result.stderr and "Traceback" not in result.output


def test_publish_needs_a_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETPLACE_CONFIG_DIR", str(tmp_path / "config"))
    root = new_project(tmp_path, "needs-login")
    code, result = invoke("agent", "publish", root, "--org", "org_x")
    assert code == 1 and "not signed in" in result.stderr and "marketplace login" in result.stderr
