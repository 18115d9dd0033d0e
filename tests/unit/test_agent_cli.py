"""The agent developer kit (issue 14 item 1): ``marketplace agent init|validate|publish --dry-run``,
driven through the real ``marketplace`` click group with click's ``CliRunner``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from support.http import Recorded, RecordingServer, Reply

from functions.agent_cli import ARCHIVE_MTIME, DEFAULT_PROBE_TIMEOUT
from functions.cli import cli

NAME = "word-counter"
PACKAGE = "word_counter"


def invoke(*args: str | Path) -> tuple[int, Result]:
    """``marketplace ARGS``: its exit status (as ``main()`` returns it) and the result."""
    result = CliRunner().invoke(cli, [str(a) for a in args], standalone_mode=False, catch_exceptions=False)
    return (result.return_value if isinstance(result.return_value, int) else 0), result


@pytest.fixture(autouse=True)
def _own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never read or write the developer's own CLI config.
    monkeypatch.setenv("MARKETPLACE_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh ``agent init`` project."""
    root = tmp_path / NAME
    code, result = invoke("agent", "init", root)
    assert code == 0, result.output
    return root


def edit_manifest(root: Path, change: Callable[[dict], None]) -> None:
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    change(manifest)
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


# -- init -----------------------------------------------------------------------------------------


def test_init_writes_a_project_that_validates_and_whose_own_tests_pass(project: Path) -> None:
    assert {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()} == {
        "manifest.yaml", "pyproject.toml", "README.md", "sample-input.json", "tests/test_graph.py",
        f"{PACKAGE}/__init__.py", f"{PACKAGE}/graph.py", f"{PACKAGE}/tools.py"}
    manifest = yaml.safe_load((project / "manifest.yaml").read_text())
    assert manifest["name"] == NAME and manifest["version"] == "0.1.0"
    assert manifest["runtime"]["entrypoint"] == f"{PACKAGE}.graph:build_graph"
    assert manifest["deployment"] == ["saas", "byoc"]
    assert [t["name"] for t in manifest["tools"]] == ["text.word_count"]

    code, result = invoke("agent", "validate", project)
    assert code == 0, result.output
    assert "word-counter 0.1.0 is valid" in result.stdout
    assert "returns a graph that compiles (count, report)" in result.stdout
    assert "sample-input.json satisfies the inputs schema" in result.stdout

    code, result = invoke("agent", "validate", project, "--json")
    report = json.loads(result.stdout)
    assert code == 0 and report["valid"] is True and report["problems"] == []
    assert report["tools"] == {"text.word_count": ["text:read"]} and report["nodes"] == ["count", "report"]

    # The project's own tests pass with plain pytest, in its own folder.
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_init_names_the_agent_with_name_and_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    code, result = invoke("agent", "init", tmp_path / "x", "--name", "invoice-triage", "--json")
    assert code == 0 and json.loads(result.stdout)["package"] == "invoice_triage"
    assert (tmp_path / "x" / "invoice_triage" / "graph.py").is_file()

    code, result = invoke("agent", "init", tmp_path / "x")
    assert code == 1 and "is not empty" in result.stderr

    code, result = invoke("agent", "init", tmp_path / "My Agent!")  # a name is made of it
    assert code == 0 and "name: my-agent" in (tmp_path / "My Agent!" / "manifest.yaml").read_text()

    code, result = invoke("agent", "init", tmp_path / "ab")  # too short for a slug
    assert code == 1 and "--name" in result.stderr


# -- validate -------------------------------------------------------------------------------------


def _bad_field(root: Path) -> None:
    edit_manifest(root, lambda m: m["runtime"].update(timeout_seconds=0))


def _missing_module(root: Path) -> None:
    edit_manifest(root, lambda m: m["runtime"].update(entrypoint=f"{PACKAGE}.nowhere:build_graph"))


def _not_a_graph(root: Path) -> None:
    with (root / PACKAGE / "graph.py").open("a") as f:
        f.write("\n\ndef not_a_graph():\n    return {'nodes': []}\n")
    edit_manifest(root, lambda m: m["runtime"].update(entrypoint=f"{PACKAGE}.graph:not_a_graph"))


def _hanging_import(root: Path) -> None:
    graph = root / PACKAGE / "graph.py"
    graph.write_text(graph.read_text() + "\nimport time\ntime.sleep(600)\n")


def _undeclared_tool(root: Path) -> None:
    tools = root / PACKAGE / "tools.py"
    tools.write_text(tools.read_text().replace(
        "    WORD_COUNT: ToolSpec(word_count, frozenset({TEXT_READ})),\n",
        "    WORD_COUNT: ToolSpec(word_count, frozenset({TEXT_READ})),\n"
        "    'text.shout': ToolSpec(str.upper, frozenset({TEXT_READ})),\n"))


def _undeclared_permission(root: Path) -> None:
    tools = root / PACKAGE / "tools.py"
    tools.write_text(tools.read_text().replace("frozenset({TEXT_READ})", "frozenset({TEXT_READ, 'net:connect'})"))
    # Granted by the manifest, but not listed for the tool.
    edit_manifest(root, lambda m: m["permissions"].append("net:connect"))


def _bad_sample_input(root: Path) -> None:
    (root / "sample-input.json").write_text(json.dumps({"text": "hello", "top": 0}))


@pytest.mark.parametrize(("breaking", "expected"), [
    (_bad_field, "manifest.yaml: runtime.timeout_seconds: must be ≥ 1"),
    (_missing_module, f"manifest.yaml: runtime.entrypoint: module '{PACKAGE}.nowhere' not found"),
    (_not_a_graph, f"{PACKAGE}/graph.py: not_a_graph(): returned dict, not a LangGraph graph"),
    (_hanging_import, "manifest.yaml: runtime.entrypoint: importing 'word_counter.graph', building and "
                      "compiling the graph did not finish within 3 s"),
    (_undeclared_tool, f"{PACKAGE}/tools.py: TOOLS['text.shout']: tool 'text.shout' is not declared in "
                       "manifest.yaml's tools"),
    (_undeclared_permission, f"{PACKAGE}/tools.py: TOOLS['text.word_count']: needs permission 'net:connect', "
                             "which manifest.yaml's tools[0].permissions does not list"),
    (_bad_sample_input, "sample-input.json: top: 0 is less than the minimum of 1"),
], ids=["manifest-field", "entrypoint-module-missing", "entrypoint-not-a-graph", "import-hangs",
        "tool-not-declared", "tool-permission-not-declared", "sample-input"])
def test_validate_reports_each_problem_with_its_path(project: Path, breaking: Callable[[Path], None],
                                                     expected: str) -> None:
    breaking(project)
    started = time.monotonic()
    code, result = invoke("agent", "validate", project, "--timeout", "3")
    assert time.monotonic() - started < DEFAULT_PROBE_TIMEOUT / 2  # a hang is cut at --timeout
    assert code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(expected), result.stderr
    assert lines[1:] == [f"✗ 1 problem in {project}"]  # that problem alone

    code, result = invoke("agent", "validate", project, "--timeout", "3", "--json")
    report = json.loads(result.stdout)
    assert code == 1 and report["valid"] is False
    [problem] = report["problems"]
    assert f"{problem['file']}: {problem['path']}: {problem['message']}".startswith(expected)


def test_validate_takes_another_input_file_and_reports_a_missing_manifest(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "inputs.json"
    other.write_text(json.dumps({"top": 3}))
    code, result = invoke("agent", "validate", project, "--input", other)
    assert code == 1
    assert f"{other}: 'text' is a required property" in result.stderr.splitlines()

    (project / "manifest.yaml").unlink()
    code, result = invoke("agent", "validate", project)
    assert code == 1 and result.stderr.startswith("manifest.yaml: cannot be read")


def test_the_entrypoint_is_imported_in_a_child_that_cannot_touch_the_cli(project: Path) -> None:
    graph = project / PACKAGE / "graph.py"
    # Printing garbage, exiting, and changing the environment stay in the child.
    graph.write_text(graph.read_text() + "\nimport os, sys\nprint('{not json')\nos.environ['AGENT_WAS_HERE'] = '1'\n"
                     "sys.modules.pop('json', None)\n")
    code, result = invoke("agent", "validate", project)
    assert code == 0, result.output
    assert "AGENT_WAS_HERE" not in os.environ
    graph.write_text("import sys\nsys.exit(3)\n")
    code, result = invoke("agent", "validate", project)
    assert code == 1 and "importing 'word_counter.graph' failed: SystemExit: 3" in result.stderr


# -- publish --dry-run ----------------------------------------------------------------------------


def test_publish_dry_run_builds_a_deterministic_archive_of_the_project_only(project: Path, tmp_path: Path) -> None:
    junk = [".git/config", f"{PACKAGE}/__pycache__/graph.cpython-311.pyc", "stray.pyc", ".venv/bin/python",
            "dist/old.tar.gz", "build/lib/x.py", ".env", f"{PACKAGE}.egg-info/PKG-INFO"]
    for relative in junk:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text("junk")
    (tmp_path / "secret.txt").write_text("outside the project")
    (project / "link.txt").symlink_to(tmp_path / "secret.txt")
    (project / f"{PACKAGE}/build").mkdir()  # a package's own folder named build is kept
    (project / f"{PACKAGE}/build/__init__.py").write_text("")

    code, result = invoke("agent", "publish", project, "--dry-run", "--json")
    assert code == 0, result.output
    built = json.loads(result.stdout)
    archive = project / "dist" / f"{NAME}-0.1.0.tar.gz"
    assert built["archive"] == str(archive) and built["skipped"] == ["link.txt"]
    first = archive.read_bytes()
    assert built["sha256"] == hashlib.sha256(first).hexdigest() and built["size"] == len(first)

    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    top = f"{NAME}-0.1.0"
    assert names == sorted(names)
    assert {n.split("/")[0] for n in names} == {top}
    assert all(m.isreg() and m.mtime == ARCHIVE_MTIME and m.uid == 0 and m.uname == "" for m in members)
    assert {n.removeprefix(top + "/") for n in names} == {
        "manifest.yaml", "pyproject.toml", "README.md", "sample-input.json", "tests/test_graph.py",
        f"{PACKAGE}/__init__.py", f"{PACKAGE}/graph.py", f"{PACKAGE}/tools.py", f"{PACKAGE}/build/__init__.py"}

    # The same files, touched later, build the same bytes.
    for path in project.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (time.time() + 100, time.time() + 100))
    code, result = invoke("agent", "publish", project, "--dry-run", "--json")
    assert code == 0 and json.loads(result.stdout)["sha256"] == built["sha256"]
    assert archive.read_bytes() == first


def test_publish_validates_first(project: Path) -> None:
    _bad_sample_input(project)
    code, result = invoke("agent", "publish", project, "--dry-run")
    assert code == 1
    assert "sample-input.json: top: 0 is less than the minimum of 1" in result.stderr
    assert "not published" in result.stderr
    assert not (project / "dist").exists()


# -- publish against a stand-in of the API (the package upload's contract) -----------------------


def _stand_in(package_reply: Reply) -> Callable[[Recorded], Reply]:
    """The platform's answers to a first publish: no such agent yet, the listing created, then
    ``package_reply`` to the upload."""
    listing = {"id": "agt_1", "name": NAME, "publisher_org_id": "org_1"}

    def answer(request: Recorded) -> Reply:
        route = (request.method, request.path)
        if route == ("GET", "/me"):
            return Reply(200, {"user": {"email": "dev@example.com"},
                               "memberships": [{"org_id": "org_1", "org_name": "Devs", "role": "developer"}]})
        if route == ("GET", f"/agents/{NAME}"):
            return Reply(404, {"error": {"code": "not_found", "message": "agent not found"}})
        if route == ("POST", "/agents"):
            return Reply(201, {"listing": listing, "version": {"version": "0.1.0", "status": "pending_review"}})
        if route == ("PUT", "/agents/agt_1/versions/0.1.0/package"):
            return package_reply
        return Reply(404, {"error": {"code": "not_found", "message": f"no operation at {request.path}"}})

    return answer


def _signed_in(url: str) -> None:
    from functions.cli_config import ClientConfig

    ClientConfig(url=url, email="dev@example.com", access_token="token").save()


def test_publish_submits_the_listing_then_uploads_the_archive(project: Path) -> None:
    with RecordingServer(_stand_in(Reply(201, {"agent_id": "agt_1", "version": "0.1.0", "sha256": "x",
                                               "size": 1, "kind": "source"}))) as server:
        _signed_in(server.url)
        code, result = invoke("agent", "publish", project, "--org", "Devs", "--json")
    assert code == 0, result.output
    published = json.loads(result.stdout)
    archive = (project / "dist" / f"{NAME}-0.1.0.tar.gz").read_bytes()
    assert published["listing_id"] == "agt_1" and published["status"] == "pending_review"
    assert published["sha256"] == hashlib.sha256(archive).hexdigest() and published["new_listing"] is True
    submit = next(r for r in server.requests if r.method == "POST")
    assert submit.json() == {"org_id": "org_1", "manifest_yaml": (project / "manifest.yaml").read_text()}
    upload = next(r for r in server.requests if r.method == "PUT")
    assert upload.headers["content-type"] == "application/gzip" and upload.body == archive
    assert upload.headers["authorization"] == "Bearer token"


@pytest.mark.parametrize(("reply", "message"), [
    (Reply(200, {"agent_id": "agt_1", "version": "0.1.0", "sha256": "x", "size": 1, "kind": "source"}),
     "version 0.1.0 is already published (with this same package)"),
    (Reply(409, {"error": {"code": "package_immutable", "message": "the package of a version never changes"}}),
     "version 0.1.0 is already published with another package"),
    (Reply(404, {"error": {"code": "not_found", "message": "no operation at /agents/agt_1/versions/0.1.0/package"}}),
     "takes no packages"),
], ids=["identical-package", "other-package", "no-upload-endpoint"])
def test_publish_refuses_what_the_upload_refuses(project: Path, reply: Reply, message: str) -> None:
    with RecordingServer(_stand_in(reply)) as server:
        _signed_in(server.url)
        code, result = invoke("agent", "publish", project, "--org", "org_1")
    assert code == 1 and message in result.stderr, result.output
    assert "Traceback" not in result.output
