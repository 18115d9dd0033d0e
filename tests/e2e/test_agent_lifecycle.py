"""A third-party agent from its first line to its second version (issue 14, "Done when"), through
``marketplace up`` on a fresh data directory and the CLI, as a developer and a user would:
``agent init`` → ``validate`` → ``run`` locally → ``publish`` → a platform admin approves →
``install`` → ``run --follow`` through the API (live logs and outputs, the code executed in the
sandbox from its package) → a second version with new code → ``publish`` → approve → upgrade →
the next run executes the new code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.cli import MARKETPLACE
from support.client_cli import Platform, start_platform, stop_platform


@pytest.fixture(scope="module")
def platform() -> Any:
    started = start_platform("marketplace-agent-lifecycle-")
    yield started
    stop_platform(started)


def token(platform: Platform, email: str, *, admin: bool = False) -> str:
    args = [str(MARKETPLACE), "token", "--email", email, "--data-dir", str(platform.data_dir)]
    result = subprocess.run(args + (["--platform-admin"] if admin else []), capture_output=True, text=True,
                            env=platform.env, timeout=120, check=True)
    return result.stdout.strip()


def approve(platform: Platform, agent_id: str, version: str) -> None:
    headers = {"Authorization": f"Bearer {token(platform, 'moderator@example.com', admin=True)}"}
    resp = httpx.post(f"{platform.url}/admin/agents/{agent_id}/approve", json={"version": version},
                      headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text


def bump(project: Path, version: str) -> None:
    manifest = yaml.safe_load((project / "manifest.yaml").read_text())
    old = manifest["version"]
    manifest["version"] = version
    (project / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{old}"', f'version = "{version}"', 1))


@pytest.mark.embedded_postgres
def test_a_developers_agent_from_init_to_its_second_version(platform: Platform) -> None:
    platform.cli("login", "--email", "dev@example.com")
    platform.cli("orgs", "create", "Word counters")
    project = platform.home / "word-counter"
    platform.cli("agent", "init", str(project))
    checked = platform.cli("agent", "validate", str(project))  # exit 0 (asserted by cli)
    assert "word-counter 0.1.0 is valid" in checked.stdout and "satisfies the inputs schema" in checked.stdout

    local = json.loads(platform.cli("agent", "run", str(project), "--json").stdout)
    assert local["status"] == "succeeded" and local["outputs"]["words"] == 17, local
    assert [line["step"] for line in local["logs"]] == ["count", "report"]

    published = json.loads(platform.cli("agent", "publish", str(project), "--json").stdout)
    agent_id = published["listing_id"]
    assert published["version"] == "0.1.0" and len(published["sha256"]) == 64
    again = platform.cli("agent", "publish", str(project), check=False)
    assert again.returncode == 1  # a version already published is refused
    approve(platform, agent_id, "0.1.0")

    platform.cli("install", "word-counter")
    followed = platform.cli("run", "word-counter", "--input", str(project / "sample-input.json"), "--follow")
    assert "counting the words" in followed.stdout and "17 words" in followed.stdout, followed.stdout
    first = platform.cli_json("runs", "show")
    assert first["status"] == "succeeded" and first["outputs"]["words"] == 17, first
    assert "edition" not in first["outputs"]

    graph = project / "word_counter" / "graph.py"
    graph.write_text(graph.read_text().replace('outputs = {"words": counts.get("words", 0),',
                                               'outputs = {"edition": 2, "words": counts.get("words", 0),', 1))
    bump(project, "0.2.0")
    second_version = json.loads(platform.cli("agent", "publish", str(project), "--json").stdout)
    assert second_version["version"] == "0.2.0" and second_version["sha256"] != published["sha256"]
    approve(platform, agent_id, "0.2.0")

    deployments = platform.cli_json("deployments", "list")
    items = deployments["items"] if isinstance(deployments, dict) else deployments
    deployment = next(d for d in items if d["agent_id"] == agent_id)
    org_id = platform.config()["org_id"]
    headers = {"Authorization": f"Bearer {token(platform, 'dev@example.com')}"}
    upgraded = httpx.post(f"{platform.url}/orgs/{org_id}/deployments/{deployment['id']}/upgrade",
                          json={"version": "0.2.0"}, headers=headers, timeout=30)
    assert upgraded.status_code == 200, upgraded.text

    platform.cli("run", "word-counter", "--input", str(project / "sample-input.json"), "--follow")
    second = platform.cli_json("runs", "show")
    assert second["id"] != first["id"] and second["status"] == "succeeded", second
    assert second["outputs"] == {"edition": 2, **first["outputs"]}
    assert second["version"] == "0.2.0"
