"""``marketplace agent run [DIR] --input FILE [--config FILE]``: run an agent project locally.

The run goes through the same runner as on the platform (runtime/sandbox.py): a child process
forked from the zygote, confined the same way (its own uid when you are root, a read-only file
system but its working directory, no network unless the manifest asks for ``network:egress``,
the manifest's resource limits and timeout, an empty environment), its tool calls checked against
the manifest. No server is needed: the deployment is granted every permission the manifest
declares, there are no checkpoints and no approvals (a gated remediation call is not executed).
Log lines print as they come; the outputs print as JSON at the end. Exit 0 when the run
succeeded, 1 when it failed or the project is invalid, 2 when a file cannot be read.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from functions.cli_output import Output


class _Usage(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _read_object(path: str | None, what: str) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) if text.strip() else {}
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"cannot read {what} {path}: {exc}", 2) from exc
    except yaml.YAMLError as exc:
        raise _Usage(f"{path}: not JSON or YAML: {exc}", 1) from exc
    if not isinstance(data, dict):
        raise _Usage(f"{path}: the {what} must be an object", 1)
    return data


def _schema_problems(schema: Mapping[str, Any], data: Mapping[str, Any], where: str) -> list[str]:
    import jsonschema  # noqa: PLC0415

    validator = jsonschema.Draft202012Validator(dict(schema))
    problems = []
    for error in sorted(validator.iter_errors(dict(data)), key=lambda e: [str(p) for p in e.absolute_path]):
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(f"{path}: {error.message}")
    return problems


def load_project(directory: Path) -> dict[str, Any]:
    """The project's manifest (validated as the server validates it); ``_Usage`` when it is not."""
    from shared.catalog import check_manifest  # noqa: PLC0415

    path = directory / "manifest.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"cannot read {path}: {exc}", 2) from exc
    verdict = check_manifest(manifest_yaml=text)
    if not verdict.ok:
        lines = [f"manifest.yaml: {p['path'] or '(document)'}: {p['message']}" for p in verdict.problems]
        raise _Usage("\n".join(lines), 1)
    manifest = yaml.safe_load(text)
    assert isinstance(manifest, dict)
    return manifest


class _PrintedLog:
    """The run's log lines, printed as they come (and kept for ``--json``)."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.lines: list[dict[str, Any]] = []

    def write(self, step: str, message: str, *, level: str = "info", fields: Mapping[str, Any] | None = None
              ) -> None:
        line = {"ts": time.strftime("%H:%M:%S"), "level": level, "step": step, "message": message,
                "fields": dict(fields or {})}
        self.lines.append(line)
        if not self.out.as_json:
            marker = {"error": "✗ ", "warning": "! "}.get(level, "")
            print(f"{line['ts']}  {step:<24} {marker}{message}", flush=True)

    def flush(self) -> None:
        """Lines print as they come."""


def run_project(directory: Path, inputs: Mapping[str, Any], config: Mapping[str, Any], out: Output
                ) -> tuple[Any, _PrintedLog]:
    """Run the project once through the sandbox; the outcome and its log."""
    from runtime.executor import RunSpec  # noqa: PLC0415
    from runtime.sandbox import SandboxExecutor  # noqa: PLC0415

    manifest = load_project(directory)
    problems = (_schema_problems(manifest.get("inputs") or {"type": "object"}, inputs, "inputs")
                + _schema_problems(manifest.get("config") or {"type": "object"}, config, "config"))
    if problems:
        raise _Usage("\n".join(problems), 1)
    spec = RunSpec(run_id=f"local-{int(time.time() * 1000)}", manifest=manifest, config=dict(config),
                   inputs=dict(inputs), granted_permissions=list(manifest.get("permissions") or []))
    log = _PrintedLog(out)
    executor = SandboxExecutor()
    try:
        outcome = executor.execute(spec, log=log, package_dir=directory.resolve())
    finally:
        executor.close()
    return outcome, log


@click.command("run")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--input", "input_file", metavar="FILE", help="the run's inputs (JSON or YAML; default: "
              "sample-input.json of the project when there is one)")
@click.option("--config", "config_file", metavar="FILE", help="the deployment's config (JSON or YAML)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document: status, outputs, error, logs")
def agent_run_command(directory: Path, input_file: str | None, config_file: str | None, as_json: bool) -> None:
    """Run the agent project in DIRECTORY locally, through the platform's runner and isolation."""
    out = Output(as_json)
    if input_file is None and (directory / "sample-input.json").is_file():
        input_file = str(directory / "sample-input.json")
    try:
        outcome, log = run_project(directory, _read_object(input_file, "input"),
                                   _read_object(config_file, "config"), out)
    except _Usage as exc:
        for line in str(exc).splitlines():
            print(f"marketplace: {line}", file=sys.stderr)
        sys.exit(exc.code)
    if as_json:
        out.json({"status": outcome.status, "outputs": outcome.outputs, "error": outcome.error,
                  "metrics": outcome.report_metrics, "logs": log.lines})
    else:
        if outcome.outputs is not None:
            print(json.dumps(outcome.outputs, indent=2, ensure_ascii=False, default=str))
        verdict = f"run {outcome.status}" + (f": {outcome.error}" if outcome.error else "")
        print(("✓ " if outcome.status == "succeeded" else "✗ ") + verdict, file=sys.stderr)
    sys.exit(0 if outcome.status == "succeeded" else 1)
