"""``marketplace agent``: the agent developer kit (issue 14 item 1).

- ``agent init DIR`` writes a working agent project from the templates in ``agent_template/``;
- ``agent validate [DIR]`` checks the project as the platform will: the manifest (the server's
  model and problem paths), the entrypoint (imported in a child interpreter with a timeout, by
  ``agent_probe.py``) returning a graph that compiles, the tools of ``TOOLS`` declared in the
  manifest with their permissions, and the sample input against the ``inputs`` schema;
- ``agent publish [DIR]`` validates, builds a deterministic ``name-version.tar.gz`` and submits the
  listing (or the new version) with the stored login, then uploads the package.

``agent run`` belongs to the data plane (it runs the project through the platform's runner).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import click

from functions.cli_agent_run import agent_run_command
from functions.cli_api import ApiError
from functions.cli_client import Session, client_command, json_option
from functions.cli_output import Output
from shared.kernel.errors import ErrorCode

if TYPE_CHECKING:
    from shared.catalog import AgentManifest

TEMPLATE_DIR = Path(__file__).with_name("agent_template")
PROBE_SCRIPT = Path(__file__).with_name("agent_probe.py")
MANIFEST_FILE = "manifest.yaml"
SAMPLE_INPUT_FILE = "sample-input.json"
DIST_DIR = "dist"
#: Seconds the entrypoint's import, build and compile may take before validation gives up on it.
DEFAULT_PROBE_TIMEOUT = 60.0
#: The platform's limit on a package (the server enforces its own; this only fails sooner).
MAX_PACKAGE_BYTES = 50 * 2**20
#: Every file of a package carries this modification time (1980-01-01, as wheels), so that two
#: builds of the same files are the same bytes.
ARCHIVE_MTIME = 315_532_800
#: Never packaged, wherever they are: version control, caches, virtual environments, local secrets.
EXCLUDED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".pytest_cache", ".mypy_cache",
                           ".ruff_cache", ".tox", ".nox", ".idea", ".vscode"})
#: Never packaged at the project's top: build outputs.
EXCLUDED_TOP_DIRS = frozenset({DIST_DIR, "build"})
EXCLUDED_FILES = frozenset({".env", ".DS_Store"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_SLUG = re.compile(r"^[a-z][a-z0-9-]*[a-z0-9]$")


@click.group("agent")
def agent() -> None:
    """Build an agent: init a project, validate it, publish it to the marketplace."""


# -- init --------------------------------------------------------------------------------------


def slug_of(text: str) -> str:
    """A manifest name made of a folder's name: lower-case, runs of other characters as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render_project(name: str, publisher: str) -> dict[str, str]:
    """The files of a new project (relative path -> text), from ``agent_template/``."""
    package = name.replace("-", "_")
    values = {"name": name, "package": package, "publisher": publisher,
              "display_name": " ".join(part.capitalize() for part in name.split("-"))}
    files: dict[str, str] = {}
    for template in sorted(TEMPLATE_DIR.rglob("*.tmpl")):
        parts = list(template.relative_to(TEMPLATE_DIR).with_suffix("").parts)
        if parts[0] == "package":
            parts[0] = package
        files["/".join(parts)] = Template(template.read_text(encoding="utf-8")).substitute(values)
    return files


@agent.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="the agent's name, a slug (default: made of DIR's name)")
@click.option("--publisher", default="Independent developer", show_default=True,
              help="the publisher shown in the manifest")
@json_option
def init_command(directory: Path, name: str | None, publisher: str, as_json: bool) -> int:
    """Write a working agent project in DIR (new or empty): manifest, package, graph, tool, test,
    sample input."""
    out = _output(as_json)
    if directory.exists() and any(directory.iterdir()):
        out.error(f"{directory} is not empty", "give a new or empty folder")
        return 1
    name = name or slug_of(directory.resolve().name)
    if not (3 <= len(name) <= 64 and _SLUG.fullmatch(name)):
        out.error(f"{name!r} is not a valid agent name: 3 to 64 lower-case letters, digits and hyphens, "
                  "starting with a letter", "give one with --name, e.g. --name word-counter")
        return 1
    files = render_project(name, publisher)
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if out.as_json:
        out.json({"directory": str(directory), "name": name, "package": name.replace("-", "_"), "files": list(files)})
        return 0
    out.success(f"created agent {name} in {directory}")
    for relative in files:
        out.say(f"  {relative}")
    out.say(f"next: cd {directory} && marketplace agent validate")
    return 0


# -- validate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something that keeps a project from being published, at a file and a path in it."""

    file: str
    path: str
    message: str

    def line(self) -> str:
        """``file: path: message``."""
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


@dataclass
class ProjectCheck:
    """What ``agent validate`` found out about a project."""

    root: Path
    manifest: AgentManifest | None = None
    manifest_text: str = ""
    problems: list[Problem] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    tools: dict[str, list[str]] = field(default_factory=dict)
    input_file: str | None = None

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` report."""
        m = self.manifest
        return {"valid": self.ok, "directory": str(self.root),
                "problems": [{"file": p.file, "path": p.path, "message": p.message} for p in self.problems],
                "name": m.name if m else None, "version": m.version if m else None,
                "entrypoint": m.runtime.entrypoint if m else None, "nodes": self.nodes, "tools": self.tools,
                "input_file": self.input_file}


def check_project(root: Path, input_file: Path | None = None, timeout: float = DEFAULT_PROBE_TIMEOUT) -> ProjectCheck:
    """Every check of ``agent validate``; never raises for a bad project."""
    from shared.catalog import check_manifest  # noqa: PLC0415 -- the CLI starts without the catalog

    check = ProjectCheck(root=root)
    path = root / MANIFEST_FILE
    try:
        check.manifest_text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        check.problems.append(Problem(MANIFEST_FILE, "", f"cannot be read: {exc}"))
        return check
    verdict = check_manifest(manifest_yaml=check.manifest_text)
    check.problems += [Problem(MANIFEST_FILE, p["path"], p["message"]) for p in verdict.problems]
    check.manifest = manifest = verdict.manifest
    if manifest is None:
        return check
    check.problems += _pyproject_problems(root, manifest)
    _probe(check, manifest, timeout)
    check.problems += _tool_problems(manifest, check.tools, check.root)
    check.problems += _input_problems(check, manifest, input_file)
    return check


def _pyproject_problems(root: Path, manifest: AgentManifest) -> list[Problem]:
    path = root / "pyproject.toml"
    if not path.exists():
        return []
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return [Problem("pyproject.toml", "", f"cannot be read: {exc}")]
    version = project.get("version") if isinstance(project, dict) else None
    if isinstance(version, str) and version != manifest.version:
        return [Problem("pyproject.toml", "project.version",
                        f"is {version}, the manifest's version is {manifest.version}; keep them equal")]
    return []


def _probe_env() -> dict[str, str]:
    # The project's code gets no platform settings, tokens or paths of the CLI's environment.
    return {k: v for k, v in os.environ.items() if not k.startswith(("MARKETPLACE_", "PYTHON"))}


def _probe(check: ProjectCheck, manifest: AgentManifest, timeout: float) -> None:
    """Run ``agent_probe.py`` on the project in a child interpreter; a hang is killed (with
    everything it started) after ``timeout`` seconds."""
    entrypoint = manifest.runtime.entrypoint
    where = Problem(MANIFEST_FILE, "runtime.entrypoint", "")
    proc = subprocess.Popen([sys.executable, "-I", str(PROBE_SCRIPT), str(check.root), entrypoint],  # noqa: S603
                            cwd=check.root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_probe_env(), start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        check.problems.append(Problem(where.file, where.path,
                                      f"importing {entrypoint.partition(':')[0]!r}, building and compiling the "
                                      f"graph did not finish within {timeout:g} s (does an import wait for "
                                      "something?)"))
        return
    finally:
        _kill_group(proc)  # whatever the project's code left running
    try:
        report = json.loads(stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        said = stderr.decode("utf-8", "replace").strip().splitlines()
        check.problems.append(Problem(where.file, where.path,
                                      f"checking the entrypoint stopped (exit status {proc.returncode})"
                                      + (f": {said[-1]}" if said else "")))
        return
    check.problems += [Problem(p["file"], p["path"], p["message"]) for p in report.get("problems", [])]
    check.nodes = list(report.get("nodes") or [])
    check.tools = dict(report.get("tools") or {})


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tool_problems(manifest: AgentManifest, tools: dict[str, list[str]], root: Path) -> list[Problem]:
    """Every tool of ``TOOLS`` declared in the manifest, needing only the permissions declared."""
    package = manifest.runtime.entrypoint.partition(".")[0].partition(":")[0]
    where = f"{package}/tools.py" if (root / package / "tools.py").exists() else f"{package}/tools"
    declared = {tool.name: (index, tool) for index, tool in enumerate(manifest.tools)}
    problems = []
    for name, needed in sorted(tools.items()):
        if name not in declared:
            problems.append(Problem(where, f"TOOLS[{name!r}]",
                                    f"tool {name!r} is not declared in {MANIFEST_FILE}'s tools"))
            continue
        index, tool = declared[name]
        for permission in needed:
            if permission not in tool.permissions:
                problems.append(Problem(where, f"TOOLS[{name!r}]",
                                        f"needs permission {permission!r}, which {MANIFEST_FILE}'s "
                                        f"tools[{index}].permissions does not list"))
            if permission not in manifest.permissions:
                problems.append(Problem(where, f"TOOLS[{name!r}]",
                                        f"needs permission {permission!r}, which {MANIFEST_FILE}'s permissions "
                                        "does not grant"))
    return problems


def _input_problems(check: ProjectCheck, manifest: AgentManifest, input_file: Path | None) -> list[Problem]:
    from shared.runs import input_problems  # noqa: PLC0415 -- as the server validates a run's inputs

    path = input_file or check.root / SAMPLE_INPUT_FILE
    if input_file is None and not path.exists():
        return []
    shown = str(input_file) if input_file else SAMPLE_INPUT_FILE
    check.input_file = shown
    try:
        inputs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [Problem(shown, "", f"is not readable JSON: {exc}")]
    if not isinstance(inputs, dict):
        return [Problem(shown, "", "must be a JSON object (a run's inputs)")]
    return [Problem(shown, p["path"].removeprefix("inputs").lstrip("."), p["message"])
            for p in input_problems(manifest, inputs)]


def _output(as_json: bool) -> Output:
    ctx = click.get_current_context()
    return Output(as_json or bool((ctx.find_root().params or {}).get("as_json")))


def report_check(out: Output, check: ProjectCheck) -> None:
    """The problems on stderr (one ``file: path: message`` line each), or the ✓ summary."""
    if out.as_json:
        out.json(check.as_dict())
    for problem in check.problems:
        click.echo(problem.line(), err=True)
    if check.problems:
        count = len(check.problems)
        click.echo(f"✗ {count} problem{'s' if count > 1 else ''} in {check.root}", err=True)
        return
    if out.as_json:
        return
    m = check.manifest
    assert m is not None
    out.success(f"{MANIFEST_FILE}: {m.name} {m.version} is valid")
    out.success(f"{m.runtime.entrypoint} returns a graph that compiles ({', '.join(check.nodes)})")
    out.success(f"{len(check.tools)} tool{'s' if len(check.tools) != 1 else ''} of TOOLS declared with "
                "their permissions")
    if check.input_file:
        out.success(f"{check.input_file} satisfies the inputs schema")


def _timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_PROBE_TIMEOUT,
                        show_default=True,
                        help="seconds the entrypoint may take to import, build and compile")(func)


@agent.command("validate")
@click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--input", "input_file", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"the run inputs to check (default: {SAMPLE_INPUT_FILE} when there is one)")
@_timeout_option
@json_option
def validate_command(directory: Path, input_file: Path | None, timeout: float, as_json: bool) -> int:
    """Check the project in DIR (default: here) as the platform will; exit 1 on any problem."""
    out = _output(as_json)
    check = check_project(directory.resolve(), input_file, timeout)
    report_check(out, check)
    return 0 if check.ok else 1


# -- publish -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A built package: ``name-version.tar.gz`` and what it holds."""

    filename: str
    data: bytes
    files: list[str]
    skipped: list[str]

    @property
    def sha256(self) -> str:
        """The digest the platform records for the version."""
        return hashlib.sha256(self.data).hexdigest()


def package_files(root: Path) -> tuple[list[str], list[str]]:
    """The project's regular files to package (relative POSIX paths, sorted) and the links and
    special files left out."""
    files: list[str] = []
    skipped: list[str] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        top = here == root
        for name in list(dirs):
            if name in EXCLUDED_DIRS or name.endswith(".egg-info") or (top and name in EXCLUDED_TOP_DIRS):
                dirs.remove(name)
            elif (here / name).is_symlink():
                dirs.remove(name)
                skipped.append((here / name).relative_to(root).as_posix())
        for name in names:
            if name in EXCLUDED_FILES or name.endswith(EXCLUDED_SUFFIXES):
                continue
            relative = (here / name).relative_to(root).as_posix()
            if stat.S_ISREG((here / name).lstat().st_mode):
                files.append(relative)
            else:
                skipped.append(relative)
    return sorted(files), sorted(skipped)


def build_package(root: Path, name: str, version: str) -> Package:
    """A gzip'd tar whose one top-level folder ``name-version/`` holds the project's files, the
    same bytes for the same files (sorted entries, fixed times and owners, no gzip name or time)."""
    top = f"{name}-{version}"
    files, skipped = package_files(root)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative in files:
            path = root / relative
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{top}/{relative}")
            info.size = len(data)
            info.mtime = ARCHIVE_MTIME
            info.mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return Package(filename=f"{top}.tar.gz", data=buffer.getvalue(), files=files, skipped=skipped)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


@agent.command("publish")
@click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--org", default=None, help="the publishing organisation, a name or an id (default: the current one)")
@click.option("--url", default=None, help="the platform's API (default: the one you signed in to)")
@click.option("--dry-run", is_flag=True, help=f"build the package into {DIST_DIR}/ and stop")
@_timeout_option
@client_command
def publish_command(s: Session, directory: Path, org: str | None, dry_run: bool, timeout: float) -> int:
    """Validate the project in DIR (default: here), build its package and publish it: a new listing,
    or a new version of yours; both wait for the platform's review."""
    root = directory.resolve()
    check = check_project(root, None, timeout)
    if not check.ok:
        report_check(s.out, check)
        s.out.error("not published: fix the problems above")
        return 1
    manifest = check.manifest
    assert manifest is not None
    package = build_package(root, manifest.name, manifest.version)
    if len(package.data) > MAX_PACKAGE_BYTES:
        s.out.error(f"the package is {_size(len(package.data))}; the platform takes at most "
                    f"{_size(MAX_PACKAGE_BYTES)}", "leave data files out, or fetch them at run time")
        return 1
    archive = root / DIST_DIR / package.filename
    archive.parent.mkdir(exist_ok=True)
    archive.write_bytes(package.data)
    built = {"archive": str(archive), "sha256": package.sha256, "size": len(package.data), "files": package.files,
             "skipped": package.skipped}
    for skipped in package.skipped:
        s.out.say(f"left out {skipped}: links and special files are not packaged")
    if dry_run:
        if s.out.as_json:
            s.out.json({"name": manifest.name, "version": manifest.version, **built})
        else:
            s.out.success(f"built {archive} ({len(package.files)} files, {_size(len(package.data))})")
            s.out.fields([("sha256", package.sha256)])
        return 0
    s.out.say(f"built {archive} ({len(package.files)} files, {_size(len(package.data))}, sha256 {package.sha256})")
    org_id = s.org_id(org)
    listing, version, created = _submit(s, org_id, manifest, check.manifest_text)
    uploaded = _upload(s, listing["id"], manifest.version, package)
    result = {"listing_id": listing["id"], "name": manifest.name, "version": manifest.version,
              "status": version["status"], "new_listing": created, "package": uploaded, **built}
    if s.out.as_json:
        s.out.json(result)
    else:
        s.out.success(f"published {manifest.name} {manifest.version}" + (" as a new listing" if created else ""))
        s.out.fields([("listing", listing["id"]), ("version", manifest.version), ("sha256", package.sha256),
                      ("status", version["status"])])
        s.out.say("next: the platform reviews the version; marketplace agents show "
                  f"{manifest.name} shows its status")
    return 0


def _submit(s: Session, org_id: str, manifest: AgentManifest, text: str
            ) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The listing, its version and whether the listing is new: ``POST /agents`` for a new name,
    else ``POST /agents/{id}/versions``."""
    try:
        detail = s.api.get(f"/agents/{manifest.name}")
    except ApiError as exc:
        if exc.status != 404:
            raise
        detail = None
    if detail is None:
        s.out.say(f"submitting {manifest.name} {manifest.version} as a new listing")
        submitted = s.api.post("/agents", {"org_id": org_id, "manifest_yaml": text})
        return submitted["listing"], submitted["version"], True
    listing = detail["listing"]
    if listing["publisher_org_id"] != org_id:
        raise ApiError(409, ErrorCode.NAME_TAKEN, f"an agent named {manifest.name!r} is published by "
                       f"{listing.get('publisher_name')}, not by this organisation",
                       "choose another name in manifest.yaml, or publish with the --org that owns it")
    s.out.say(f"submitting version {manifest.version} of {manifest.name} ({listing['id']})")
    try:
        submitted = s.api.post(f"/agents/{listing['id']}/versions", {"manifest_yaml": text})
    except ApiError as exc:
        if exc.code == ErrorCode.VERSION_EXISTS:
            return listing, _unfinished_version(s, listing["id"], manifest, exc), False
        if exc.code == ErrorCode.VERSION_NOT_NEWER:
            exc.hint = "raise the version in manifest.yaml (and pyproject.toml) above every published one"
        raise
    return submitted["listing"], submitted["version"], False


def _unfinished_version(s: Session, agent_id: str, manifest: AgentManifest, exc: ApiError) -> dict[str, Any]:
    """An existing version with this very manifest may still lack its package (an earlier publish
    broke off before the upload): it is finished. Any other existing version is refused."""
    exc.hint = "versions are immutable: raise the version in manifest.yaml (and pyproject.toml)"
    version = dict(s.api.get(f"/agents/{agent_id}/versions/{manifest.version}"))
    if version.get("manifest") != manifest.model_dump(mode="json"):
        raise exc
    # A package already on it makes the upload answer 200 (the same bytes) or 409: refused there.
    return version


def _upload(s: Session, agent_id: str, version: str, package: Package) -> dict[str, Any]:
    """``PUT`` the package; an identical one uploaded before means the version is published already."""
    path = f"/agents/{agent_id}/versions/{version}/package"
    try:
        resp = s.api.request("PUT", path, content=package.data, headers={"Content-Type": "application/gzip"})
    except ApiError as exc:
        if exc.status in (404, 405) and exc.message.startswith("no operation"):
            exc.message = f"the version was submitted, but the platform at {s.api.url} takes no packages"
            exc.hint = "it is older than this CLI: publish again once it is upgraded (the upload is resumed)"
        elif exc.code == ErrorCode.PACKAGE_IMMUTABLE:
            exc.message = f"version {version} is already published with another package ({exc.message})"
            exc.hint = "versions are immutable: raise the version in manifest.yaml (and pyproject.toml)"
        raise
    if resp.status_code == 200:
        raise ApiError(409, ErrorCode.VERSION_EXISTS,
                       f"version {version} is already published (with this same package)",
                       "versions are immutable: raise the version in manifest.yaml (and pyproject.toml)")
    return dict(resp.json())


agent.add_command(agent_run_command)  # `agent run` lives in functions/cli_agent_run.py (the local runner)
