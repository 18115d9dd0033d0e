"""The part of ``marketplace agent validate`` that runs an agent project's own code.

Run as a script in a child interpreter, never imported by the CLI::

    python -I functions/agent_probe.py PROJECT_DIR MODULE:CALLABLE

(``-I``: no ``PYTHONPATH``, no user site, not even this script's folder on ``sys.path``), so that a
broken or hostile import can neither hang the CLI (the parent kills it after a timeout) nor change
its state. With the project folder first on ``sys.path`` it imports the entrypoint's module, calls
the callable, checks that the result is a LangGraph graph that compiles, and reads the ``TOOLS``
mapping of the package's ``tools`` module as the platform's executor does. It prints one JSON
object on its standard output (what the imported code prints goes to standard error)::

    {"problems": [{"file": ..., "path": ..., "message": ...}], "nodes": [...], "tools": {name: [permission]}}

It imports nothing of the platform: only the standard library and LangGraph.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Problems = list[dict[str, str]]


def _file_of(module: Any, root: Path, fallback: str) -> str:
    """The module's file relative to the project (``fallback`` when it is elsewhere)."""
    try:
        return Path(module.__file__).resolve().relative_to(root).as_posix()
    except (AttributeError, TypeError, ValueError):
        return fallback


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _import(name: str, root: Path) -> tuple[Any, str | None]:
    """The module, or None with what went wrong; a module found outside the project is refused."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None, f"module {name!r} not found in {root}"
        return None, f"importing {name!r} failed: {_describe(exc)}"
    except BaseException as exc:  # noqa: BLE001 -- anything the project's code raises, SystemExit too
        return None, f"importing {name!r} failed: {_describe(exc)}"
    file = getattr(module, "__file__", None)
    if file is None or not Path(file).resolve().is_relative_to(root):
        return None, (f"module {name!r} is imported from {file or 'outside the project'}, not from the project "
                      f"folder {root}: name the project's own package")
    return module, None


def check_graph(root: Path, entrypoint: str, problems: Problems) -> list[str]:
    """Import the entrypoint and compile its graph; the graph's node names."""
    module_name, _, attribute = entrypoint.partition(":")
    module, error = _import(module_name, root)
    if module is None:
        problems.append({"file": "manifest.yaml", "path": "runtime.entrypoint", "message": str(error)})
        return []
    factory = getattr(module, attribute, None)
    where = _file_of(module, root, module_name)
    if factory is None:
        problems.append({"file": "manifest.yaml", "path": "runtime.entrypoint",
                         "message": f"{where} has no {attribute!r}"})
        return []
    if not callable(factory):
        problems.append({"file": "manifest.yaml", "path": "runtime.entrypoint",
                         "message": f"{module_name}.{attribute} is not callable"})
        return []
    try:
        built = factory()
    except BaseException as exc:  # noqa: BLE001 -- reported, whatever the project's code raised
        problems.append({"file": where, "path": f"{attribute}()", "message": f"raised {_describe(exc)}"})
        return []
    from langgraph.pregel import Pregel  # noqa: PLC0415 -- after the project's import, which may fail first

    compiled: Any = built
    if not isinstance(built, Pregel):
        compile_ = getattr(built, "compile", None)
        if not callable(compile_):
            problems.append({"file": where, "path": f"{attribute}()",
                             "message": f"returned {type(built).__name__}, not a LangGraph graph "
                                        "(a StateGraph, or a compiled graph)"})
            return []
        try:
            compiled = compile_()
        except BaseException as exc:  # noqa: BLE001
            problems.append({"file": where, "path": f"{attribute}().compile()", "message": f"raised {_describe(exc)}"})
            return []
        if not isinstance(compiled, Pregel):
            problems.append({"file": where, "path": f"{attribute}().compile()",
                             "message": f"returned {type(compiled).__name__}, not a compiled LangGraph graph"})
            return []
    return [str(node) for node in compiled.nodes if not str(node).startswith("__")]


def _permissions(implementation: object) -> list[str] | None:
    permissions = getattr(implementation, "permissions", None)
    if isinstance(permissions, str) or not isinstance(permissions, Iterable):
        return None
    found = list(permissions)
    return sorted(found) if all(isinstance(p, str) for p in found) else None


def read_tools(root: Path, entrypoint: str, problems: Problems) -> dict[str, list[str]]:
    """The package's ``tools.TOOLS``: tool name -> the permissions its code needs."""
    package = entrypoint.partition(":")[0].partition(".")[0]
    fallback = f"{package}/tools.py"
    try:
        module = importlib.import_module(f"{package}.tools")
    except ModuleNotFoundError as exc:
        if exc.name in (package, f"{package}.tools"):
            return {}  # no tools module: the agent registers no tools
        problems.append({"file": fallback, "path": "", "message": f"importing it failed: {_describe(exc)}"})
        return {}
    except BaseException as exc:  # noqa: BLE001
        problems.append({"file": fallback, "path": "", "message": f"importing it failed: {_describe(exc)}"})
        return {}
    where = _file_of(module, root, fallback)
    tools = getattr(module, "TOOLS", {})
    if not isinstance(tools, Mapping):
        problems.append({"file": where, "path": "TOOLS",
                         "message": "must be a mapping of tool name to (func, permissions)"})
        return {}
    found: dict[str, list[str]] = {}
    for name, implementation in tools.items():
        permissions = _permissions(implementation)
        if not isinstance(name, str) or permissions is None:
            problems.append({"file": where, "path": f"TOOLS[{name!r}]",
                             "message": "must have a name and permissions (a set of 'resource:action' strings)"})
            continue
        if not callable(getattr(implementation, "func", None)):
            problems.append({"file": where, "path": f"TOOLS[{name!r}].func", "message": "is not callable"})
        found[name] = permissions
    return found


def probe(root: Path, entrypoint: str) -> dict[str, Any]:
    """Every check; the JSON object the parent reads."""
    problems: Problems = []
    sys.path.insert(0, str(root))
    nodes = check_graph(root, entrypoint, problems)
    tools = read_tools(root, entrypoint, problems) if not problems else {}
    return {"problems": problems, "nodes": nodes, "tools": tools}


def main(argv: list[str]) -> int:
    """``agent_probe.py PROJECT_DIR ENTRYPOINT``: the report on fd 1, anything else on fd 2."""
    report = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what the project's code prints must not garble the report
    sys.stdout = sys.stderr
    result = probe(Path(argv[1]).resolve(), argv[2])
    report.write(json.dumps(result) + "\n")
    report.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
