"""The README's quick start, as written (issue 19 item 7): after ``marketplace up``, at most five
commands take a newcomer to a finished run of the built-in agent and its report.

The test reads the commands from README.md (the indented block after the ``walkthrough`` marker),
starts a fresh ``marketplace up`` on a fresh data directory, and runs each line unchanged with
bash, in a folder whose ``.venv/bin/marketplace`` is this environment's command. Two things differ
from a newcomer's machine, both through the environment the commands read: ``MARKETPLACE_URL``
points ``login`` at the test's free port (the README's ``up`` uses 8080), and ``BROWSER`` is a
script that records what ``report --open`` opened.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.cli import MARKETPLACE
from support.client_cli import start_platform, stop_platform

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- walkthrough:"

def walkthrough_commands() -> list[str]:
    """The command lines of the README's walkthrough block."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
    commands: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            if commands:
                break
            continue
        if not line.startswith("    "):
            break
        commands.append(line.strip())
    return commands


def test_the_readme_has_at_most_five_cli_commands_after_up() -> None:
    commands = walkthrough_commands()
    assert 1 <= len(commands) <= 5, commands
    assert all(c.startswith(".venv/bin/marketplace ") for c in commands), commands
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.index(".venv/bin/marketplace up") < readme.index(MARKER)  # after `marketplace up`


@pytest.mark.embedded_postgres
def test_the_readme_walkthrough_ends_with_a_finished_run_and_its_report() -> None:
    platform = start_platform("marketplace-readme-")
    try:
        cwd = platform.home
        (cwd / ".venv" / "bin").mkdir(parents=True)
        (cwd / ".venv" / "bin" / "marketplace").symlink_to(MARKETPLACE)
        opened = cwd / "opened.txt"
        browser = cwd / "browser.sh"
        browser.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
        browser.chmod(0o755)
        env = {**platform.env, "BROWSER": str(browser)}
        for command in walkthrough_commands():
            result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                    timeout=300, check=False)
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            assert "Traceback" not in result.stderr
        run = json.loads(platform.cli("runs", "show", "--json").stdout)
        assert run["status"] == "succeeded"
        assert run["outputs"]["summary"]["anomaly_count"] >= 1  # the shipped sample shows the product
        url = opened.read_text().strip()
        assert url.startswith("file://") and url.endswith(f"/{run['id']}.html")
        page = Path(url.removeprefix("file://")).read_text(encoding="utf-8")
        assert "<html" in page.lower()
    finally:
        stop_platform(platform)
