"""Hostile agents against the runner's sandbox (issue 14): each attack ends its run with a clear
error, leaks nothing, and the same executor runs the next agent as if nothing happened."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.hostile_agent import manifest, write_project
from support.wait import wait_until

from runtime.executor import MemoryRunLog, Outcome, RunSpec, StopReason
from runtime.sandbox import UID_BASE, SandboxExecutor, SandboxOptions, Zygote

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox (own uid, namespaces) needs a root runner")

SECRET = "dpk_" + uuid.uuid4().hex  # what the runner holds: its data-plane key


@pytest.fixture(scope="module")
def secret_dir(agent_files: Path) -> Iterator[Path]:
    """The runner's data directory, with a key file any user could read were it not hidden."""
    folder = agent_files / "runner-data"
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "dataplane.key").write_text(SECRET)
    (folder / "dataplane.key").chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def executor(agent_files: Path, secret_dir: Path) -> Iterator[SandboxExecutor]:
    os.environ["MARKETPLACE_DATAPLANE_KEY"] = SECRET  # as the runner's container has it
    zygote = Zygote()
    executor = SandboxExecutor(SandboxOptions(root=agent_files / "sandbox", hide=(str(secret_dir),), stop_grace=1.0),
                               zygote=zygote)
    yield executor
    zygote.close()
    os.environ.pop("MARKETPLACE_DATAPLANE_KEY", None)


@pytest.fixture(scope="module")
def projects(agent_files: Path) -> dict[str, Path]:
    return {}


def run(executor: SandboxExecutor, projects: dict[str, Path], agent_files: Path, attack: str, arg: Any = None, *,
        should_stop: Any = lambda: None, permissions: list[str] | None = None, **options: Any
        ) -> tuple[Outcome, MemoryRunLog]:
    key = repr(sorted({**options, "permissions": permissions}.items()))
    if key not in projects:
        projects[key] = write_project(agent_files / f"hostile-{len(projects)}", permissions=permissions, **options)
    spec = RunSpec(run_id=f"run_{uuid.uuid4().hex[:12]}", manifest=manifest(permissions=permissions, **options),
                   config={}, inputs={"attack": attack, "arg": arg}, granted_permissions=permissions or [])
    log = MemoryRunLog()
    return executor.execute(spec, log=log, should_stop=should_stop, package_dir=projects[key]), log


def assert_no_leak(outcome: Outcome, log: MemoryRunLog) -> None:
    assert SECRET not in repr(outcome) and SECRET not in repr(log.lines)


def assert_still_serving(executor: SandboxExecutor, projects: dict[str, Path], agent_files: Path) -> None:
    outcome, _ = run(executor, projects, agent_files, "benign")
    assert outcome.status == "succeeded" and outcome.outputs == {"result": "ok"}, outcome


def test_a_benign_agent_runs_and_writes_its_own_directory(executor, projects, agent_files) -> None:
    outcome, log = run(executor, projects, agent_files, "write_here")
    assert outcome.status == "succeeded" and outcome.outputs == {"result": "fine"}, outcome
    assert [line.message for line in log.lines] == ["attacking"]
    assert outcome.metrics["cpu_seconds"] > 0 and outcome.metrics["steps"] == 1


def test_the_key_is_not_in_its_environment(executor, projects, agent_files) -> None:
    outcome, log = run(executor, projects, agent_files, "env")
    assert outcome.status == "failed" and "KeyError" in str(outcome.error) and "MARKETPLACE_DATAPLANE_KEY" in str(
        outcome.error)
    assert_no_leak(outcome, log)
    assert_still_serving(executor, projects, agent_files)


@pytest.mark.parametrize("whose", ["runner", "zygote"])
def test_the_runners_environment_is_out_of_reach(executor, projects, agent_files, whose) -> None:
    pid = os.getpid() if whose == "runner" else executor.zygote._proc.pid  # type: ignore[union-attr]
    outcome, log = run(executor, projects, agent_files, "environ_of", pid)
    assert outcome.status == "failed" and "PermissionError" in str(outcome.error), outcome
    assert_no_leak(outcome, log)


def test_no_process_environment_is_readable(executor, projects, agent_files) -> None:
    outcome, log = run(executor, projects, agent_files, "all_environs")
    assert outcome.status == "failed" and "no environment of another process" in str(outcome.error), outcome
    assert_no_leak(outcome, log)


def test_the_runners_files_are_hidden(executor, projects, agent_files, secret_dir) -> None:
    outcome, log = run(executor, projects, agent_files, "read_file", str(secret_dir / "dataplane.key"))
    assert outcome.status == "failed" and "No such file" in str(outcome.error), outcome
    assert_no_leak(outcome, log)
    home, _ = run(executor, projects, agent_files, "read_file", os.path.expanduser("~/.bashrc"))
    assert home.status == "failed"


@pytest.mark.parametrize("where", ["tmp", "var_tmp", "dev_shm", "files", "project"])
def test_it_cannot_write_outside_its_directory(executor, projects, agent_files, where) -> None:
    name = f"owned-{uuid.uuid4().hex}"
    target = {"tmp": Path("/tmp") / name, "var_tmp": Path("/var/tmp") / name, "dev_shm": Path("/dev/shm") / name,
              "files": agent_files / name, "project": agent_files / "hostile-0" / name}[where]
    outcome, _ = run(executor, projects, agent_files, "write_file", str(target))
    assert outcome.status == "failed" and ("Read-only file system" in str(outcome.error)
                                           or "Permission denied" in str(outcome.error)), outcome
    assert not target.exists()


def test_no_network_without_the_permission(executor, projects, agent_files) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        refused, _ = run(executor, projects, agent_files, "socket", address)
        assert refused.status == "failed" and "unreachable" in str(refused.error).lower(), refused
        granted, _ = run(executor, projects, agent_files, "socket", address, permissions=["network:egress"])
        assert granted.status == "succeeded" and granted.outputs == {"result": "connected"}, granted


def test_requests_outside_the_protocol_are_refused_with_their_reason(executor, projects, agent_files) -> None:
    outcome, log = run(executor, projects, agent_files, "forge_requests")
    assert outcome.status == "succeeded", outcome
    # An unknown op, a checkpoint and the approvals of a run that has neither (this executor is
    # given no stores), and a tool the deployment was never granted.
    assert outcome.outputs == {"result": "unknown_request,no_checkpoints,no_approvals,tool_refused"}
    assert any("Tool call refused by the runner" in line.message for line in log.lines)
    assert_no_leak(outcome, log)
    assert_still_serving(executor, projects, agent_files)


def test_memory_past_its_limit(executor, projects, agent_files) -> None:
    outcome, _ = run(executor, projects, agent_files, "memory", memory="256Mi")
    assert outcome.status == "failed" and "memory limit exceeded" in str(outcome.error), outcome
    assert "256 MiB" in str(outcome.error)
    assert_still_serving(executor, projects, agent_files)


def _processes_of(uid_floor: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid >= uid_floor:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def test_a_fork_bomb_hits_the_process_limit_and_is_cleaned_up(executor, projects, agent_files) -> None:
    started = time.monotonic()
    outcome, _ = run(executor, projects, agent_files, "fork_bomb")
    assert outcome.status == "failed" and "process limit reached" in str(outcome.error), outcome
    assert time.monotonic() - started < 30
    wait_until(lambda: not _processes_of(UID_BASE), timeout=10, what="the fork bomb's processes to be gone")
    assert_still_serving(executor, projects, agent_files)


@pytest.mark.parametrize("attack", ["sleep", "spin"])
def test_running_past_its_timeout(executor, projects, agent_files, attack) -> None:
    started = time.monotonic()
    outcome, log = run(executor, projects, agent_files, attack, 120, timeout=2)
    elapsed = time.monotonic() - started
    assert outcome.status == "failed" and "timed out after 2 s" in str(outcome.error), outcome
    assert elapsed < 10, elapsed
    assert any("timed out" in line.message for line in log.lines)


def test_ignoring_a_cancel(executor, projects, agent_files) -> None:
    asked = time.monotonic() + 1.0
    started = time.monotonic()
    outcome, _ = run(executor, projects, agent_files, "sleep", 120,
                     should_stop=lambda: StopReason.CANCELLED if time.monotonic() > asked else None)
    assert outcome.status == "cancelled" and "killed" in str(outcome.error), outcome
    assert time.monotonic() - started < 10
    assert_still_serving(executor, projects, agent_files)


def _archive(root: Path, files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root.name}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_package_whose_bytes_differ_from_its_digest_never_runs(agent_files: Path) -> None:
    project = write_project(agent_files / "hostile-digest")
    files = {str(p.relative_to(project)): p.read_text() for p in project.rglob("*") if p.is_file()}
    genuine = _archive(project, files)
    tampered = _archive(project, {**files, "hostile/graph.py": files["hostile/graph.py"] + "\n# tampered\n"})
    import hashlib

    digest = hashlib.sha256(genuine).hexdigest()
    fetched: list[str] = []

    def fetch(sha256: str) -> bytes:
        fetched.append(sha256)
        return tampered

    zygote = Zygote()
    try:
        executor = SandboxExecutor(SandboxOptions(root=agent_files / "sandbox-digest"), fetch_package=fetch,
                                   zygote=zygote)
        spec = RunSpec(run_id="run_digest", manifest=manifest(), config={}, inputs={"attack": "benign"},
                       granted_permissions=[], package_digest=f"sha256:{digest}")
        log = MemoryRunLog()
        outcome = executor.execute(spec, log=log)
        assert outcome.status == "failed" and "digest" in str(outcome.error).lower(), outcome
        assert fetched == [digest] and not (agent_files / "sandbox-digest" / "packages" / digest).exists()
        executor.packages.fetch = lambda sha256: genuine
        good = executor.execute(spec, log=MemoryRunLog())
        assert good.status == "succeeded" and good.outputs == {"result": "ok"}, good
    finally:
        zygote.close()
