"""The architecture's rules, checked: who may import whom, who owns which table, where SQL lives.

- The import boundaries are import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``);
  ``lint-imports`` checks them and its report says which import breaks which rule.
- Each table belongs to exactly one context (``TABLE_OWNERS``, as docs/ARCHITECTURE.md lists them),
  and a context's SQL (its ``.sql`` files) names only its own tables: another context's data is read
  or written by calling the owner's service.
- SQL lives in those ``.sql`` files as named queries, never as string literals in a context's
  Python code (nor in an operation's).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"
MIGRATIONS = SHARED / "kernel" / "db" / "migrations"

# Which context owns which table; a new table, or a new context, is added here.
TABLE_OWNERS: dict[str, frozenset[str]] = {
    "identity": frozenset({"users", "orgs", "memberships", "api_keys", "refresh_tokens", "org_preferences",
                           "idempotency_keys", "rate_limit_hits"}),
    "audit": frozenset({"audit_log", "audit_heads"}),
    "catalog": frozenset({"agents", "agent_versions", "agent_reviews", "catalog_terms"}),
    "deployments": frozenset({"deployments"}),
    "runs": frozenset({"runs", "run_logs", "run_checkpoints", "run_checkpoint_writes", "tasks"}),
    "webhooks": frozenset({"webhooks", "webhook_events", "webhook_deliveries", "webhook_attempts"}),
    "billing": frozenset({"billing_usage", "ledger_transactions", "ledger_entries", "billing_settings",
                          "billing_periods", "billing_reservations", "billing_cycles", "billing_customers",
                          "invoices", "invoice_lines", "stripe_events", "payout_accounts", "payouts",
                          "billing_refunds", "billing_subscriptions"}),
    # issue 15
    "approvals": frozenset({"approvals", "approval_votes", "approval_policies", "cloud_resources"}),
    "notifications": frozenset({"notifications", "notification_deliveries", "notification_settings",
                                "slack_action_nonces"}),
    "secrets": frozenset({"secret_keys"}),
    "kernel": frozenset({"schema_migrations"}),
    "memory": frozenset({"memories"}),  # issue 17
}
# Tables the kernel's migration runner creates itself (shared/kernel/db/migrate.py), not a migration.
RUNNER_TABLES = frozenset({"schema_migrations"})


def _contexts() -> list[str]:
    """The business-area packages under shared/ (every package but the kernel)."""
    return sorted(p.parent.name for p in SHARED.glob("*/__init__.py") if p.parent.name != "kernel")


# -- import boundaries --------------------------------------------------------

def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), f"{lint_imports} is missing: install the 'test' extra (import-linter)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"lint-imports found broken contracts:\n{done.stdout}\n{done.stderr}"


def test_every_context_is_under_the_import_contracts() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    public, frameworks = contracts["public-modules"], contracts["no-frameworks-in-services"]
    missing = [ctx for ctx in _contexts()
               if f"shared.{ctx}" not in public["source_modules"]
               or f"shared.{ctx}.*" not in public["forbidden_modules"]
               or f"shared.{ctx}" not in frameworks["source_modules"]]
    assert not missing, f"add these contexts to the import-linter contracts in pyproject.toml: {missing}"
    assert set(TABLE_OWNERS) == {*_contexts(), "kernel"}, "every context has an entry in TABLE_OWNERS"


# -- SQL: table ownership -------------------------------------------------------

# What hides a name from the scan: string literals (E'..', '..', $tag$..$tag$), comments, and the
# {placeholders} of templates. Quoted identifiers keep their name.
_SQL_NOISE = re.compile(
    r"(?P<string>[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$(?P<tag>\w*)\$[\s\S]*?\$(?P=tag)\$)"
    r"|(?P<comment>--[^\n]*|/\*[\s\S]*?\*/)"
    r"|(?P<placeholder>\{\w*\})"
    r"|\"(?P<quoted>(?:[^\"]|\"\")*)\"")
# A name that is not a qualified column (x.name) or an alias (AS name).
_SQL_NAME = re.compile(r"(?<![\w.$])(?<!\bAS )(?<!\bas )([A-Za-z_][\w$]*)")


def _blank(match: re.Match[str]) -> str:
    if match.group("quoted") is not None:
        return match.group("quoted").replace('""', '"')
    return re.sub(r"[^\n]", " ", match.group(0))  # keep the line numbers


def sql_names(sql: str) -> Iterator[tuple[int, str]]:
    """Each (line number, lower-cased name) in ``sql`` that may be a table, outside strings and comments."""
    for number, line in enumerate(_SQL_NOISE.sub(_blank, sql).splitlines(), start=1):
        for match in _SQL_NAME.finditer(line):
            yield number, match.group(1).lower()


def created_tables() -> dict[str, str]:
    """Every table the migrations create (less those they drop or rename), with the file creating it."""
    tables: dict[str, str] = {}
    statement = re.compile(
        r"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<created>[\w.\"]+)"
        r"|\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<dropped>[\w.\"]+)"
        r"|\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<renamed>[\w.\"]+)\s+RENAME\s+TO\s+(?P<to>[\w\"]+)",
        re.IGNORECASE)
    for path in sorted(MIGRATIONS.glob("*.sql")):
        text = _SQL_NOISE.sub(lambda m: " " if m.group("quoted") is None else m.group(0), path.read_text("utf-8"))
        for match in statement.finditer(text):
            def name(group: str, m: re.Match[str] = match) -> str:
                return m.group(group).strip('"').rsplit(".", 1)[-1].lower()
            if match.group("created"):
                tables[name("created")] = path.name
            elif match.group("dropped"):
                tables.pop(name("dropped"), None)
            else:
                tables[name("to")] = tables.pop(name("renamed"), path.name)
    return tables


def test_every_table_has_exactly_one_owner() -> None:
    owners: dict[str, list[str]] = {}
    for ctx, tables in TABLE_OWNERS.items():
        for table in tables:
            owners.setdefault(table, []).append(ctx)
    created = created_tables()
    assert created, f"no CREATE TABLE found under {MIGRATIONS}"
    problems = [f"{table} (created in {where}) has no owner in TABLE_OWNERS"
                for table, where in sorted(created.items()) if table not in owners]
    problems += [f"{table} is owned by {', '.join(ctxs)}" for table, ctxs in sorted(owners.items()) if len(ctxs) > 1]
    problems += [f"{table} (owned by {owners[table][0]}) is created by no migration"
                 for table in sorted(set(owners) - set(created) - RUNNER_TABLES)]
    assert not problems, "\n".join(problems)


def test_context_sql_names_only_its_own_tables() -> None:
    tables = {table for owned in TABLE_OWNERS.values() for table in owned}
    problems = []
    for ctx in [*_contexts(), "kernel"]:
        foreign = tables - TABLE_OWNERS[ctx]
        # The migrations create every context's tables; the kernel's own statements are the rest.
        for path in sorted(p for p in (SHARED / ctx).rglob("*.sql") if MIGRATIONS not in p.parents):
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            for number, name in sql_names(text):
                if name in foreign:
                    query = next((m.group(1) for line in reversed(lines[:number])
                                  if (m := re.match(r"-- name: *(\w+)", line))), "?")
                    owner = next(c for c, owned in TABLE_OWNERS.items() if name in owned)
                    problems.append(f"{path.relative_to(ROOT)}:{number} ({query}): {name} belongs to {owner}")
    assert not problems, ("a context's SQL names only its own tables; call the owner's service instead:\n"
                          + "\n".join(problems))


def test_every_context_with_tables_keeps_its_sql_in_files() -> None:
    missing = [ctx for ctx in _contexts() if TABLE_OWNERS[ctx] and not any((SHARED / ctx).rglob("*.sql"))]
    assert not missing, f"these contexts own tables but have no queries.sql: {missing}"


@pytest.mark.parametrize(("sql", "tables"), [
    ("SELECT r.id, d.status FROM runs r JOIN deployments d ON d.id = r.deployment_id", {"runs", "deployments"}),
    ("-- name: x\n-- reads deployments\nSELECT 1 FROM runs /* not orgs */ WHERE kind = 'tasks'", {"runs"}),
    ('INSERT INTO "audit_log" (seq) VALUES (%s) RETURNING {users}', {"audit_log"}),
    ("SELECT count(*) AS agents, x.users FROM webhooks x WHERE b = E'it''s \\' users' AND c = $q$orgs$q$",
     {"webhooks"}),
    ("UPDATE Tasks SET x = 1 FROM run_logs l WHERE l.runs = $1", {"tasks", "run_logs"}),
])
def test_sql_names_sees_tables_not_strings_comments_columns_or_aliases(sql: str, tables: set[str]) -> None:
    known = {table for owned in TABLE_OWNERS.values() for table in owned}
    assert {name for _, name in sql_names(sql)} & known == tables


def test_sql_names_keeps_line_numbers() -> None:
    sql = "-- name: a\n/* two\nlines */ SELECT 1\nFROM 'x\ny' , users"
    assert [(n, name) for n, name in sql_names(sql) if name == "users"] == [(5, "users")]


# -- SQL: none in Python --------------------------------------------------------

# Statements, and pieces of statements (a clause with a placeholder), as written in this code base:
# keywords in upper case, so prose ("cannot delete from ...") is not taken for SQL.
_SQL_STATEMENT = re.compile(
    r"\bSELECT\b[\s\S]*?\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+(?:\s+(?:AS\s+)?\w+)?\s+SET\b|\bDELETE\s+FROM\b"
    r"|\bSELECT\s+[\w.]+\s*\(|\bSET\s+LOCAL\b|\b(?:UN)?LISTEN\s|\bNOTIFY\s"
    # DDL, and the short statements that name no table (a ping, a setting, statistics).
    r"|\b(?:CREATE|DROP|ALTER)\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|DATABASE|EXTENSION|ROLE|SCHEMA|VIEW|POLICY)\b"
    r"|^\s*(?:SELECT|SHOW|ANALYZE|VACUUM)\s+\w+\s*;?\s*$")
_SQL_CLAUSE = re.compile(
    r"^(?=[\s\S]*(?:%s|\$\d))[\s\S]*"
    r"\b(?:WHERE|AND|OR|SET|VALUES|RETURNING|LIMIT|OFFSET|ORDER\s+BY|FOR\s+UPDATE|ON\s+CONFLICT)\b")


def looks_like_sql(text: str) -> bool:
    """Whether a string literal holds an SQL statement or a piece of one."""
    return bool(_SQL_STATEMENT.search(text) or _SQL_CLAUSE.search(text))


def string_literals(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal but docstrings; an f-string's values become ``{}``."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    # An f-string's parts are read as one text, below.
    parts = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings | parts:
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


def test_no_sql_literals_in_context_or_operation_code() -> None:
    modules = [path for ctx in [*_contexts(), "kernel"] for path in sorted((SHARED / ctx).rglob("*.py"))]
    modules += [SHARED / "composition.py"]
    modules += [path for package in ("functions", "runtime", "jobs", "byoc") for path in sorted((ROOT / package).rglob("*.py"))]
    problems = []
    for path in modules:
        for line, text in string_literals(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if looks_like_sql(text):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {' '.join(text.split())[:80]!r}")
    assert not problems, ("SQL belongs in the context's queries.sql as a named query "
                          "(shared.kernel.db.queries.Queries):\n" + "\n".join(problems))


@pytest.mark.parametrize("text", [
    "SELECT id FROM users WHERE id = %s",
    "INSERT INTO runs (id) VALUES (%s)",
    "UPDATE deployments d SET status = %s",
    "DELETE FROM tasks",
    "SELECT pg_advisory_xact_lock(%s)",
    "SET LOCAL plan_cache_mode = force_custom_plan",
    'LISTEN "{}"',
    "AND (r.created_at, r.id) < (%s::timestamptz, %s)",
    "ORDER BY created_at DESC, id DESC LIMIT %s",
    "AND deployment_id = $1",
    "CREATE INDEX CONCURRENTLY {} ON memories USING hnsw (embedding)",
    "DROP INDEX CONCURRENTLY IF EXISTS {}",
    "CREATE DATABASE {}",
    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer)",
    "SELECT 1",
    "SHOW server_version",
    "ANALYZE memories",
])
def test_looks_like_sql_finds_statements_and_pieces(text: str) -> None:
    assert looks_like_sql(text)


@pytest.mark.parametrize("text", [
    "cannot delete from a suspended listing",
    "select an agent from the catalog",
    "run %s is not running",
    "a.published_at DESC, a.id DESC",  # a sort key chosen from a fixed mapping for a template
    "READY AND WAITING",
    "BEGIN",  # transaction control, which the database layer itself is
    "create a table of the results",
    "SELECT an agent first",
])
def test_looks_like_sql_leaves_prose_and_fragments_alone(text: str) -> None:
    assert not looks_like_sql(text)


def test_string_literals_skip_docstrings_and_join_f_strings() -> None:
    tree = ast.parse('"""SELECT a FROM b."""\ndef f(t):\n    """DELETE FROM x."""\n'
                     '    return f"SELECT {t} FROM runs", "plain"\n')
    assert sorted(text for _, text in string_literals(tree) if looks_like_sql(text)) == ["SELECT {} FROM runs"]


# -- typed seams: contexts return models -------------------------------------------

# A row or an untyped mapping returned by a context's public function is a seam where a renamed
# column becomes a runtime error elsewhere. These return JSON documents on purpose:
JSON_RETURNS = {
    "shared.approvals.models.ApprovalNotice.as_json",  # the body of approval events and notifications
    "shared.approvals.ports.ResourceOutcome.as_json",  # the outcome as the approval stores it
    "shared.audit.service.as_jsonb_returns",  # any JSON value, as a jsonb column hands it back
    "shared.catalog.manifest.manifest_json_schema",  # a JSON Schema document
    "shared.catalog.rows.cursor_value",  # a sort key's JSON value inside a cursor
    "shared.deployments.service.config_problems",  # an error's details (path, message)
    "shared.runs.service.input_problems",  # an error's details (path, message)
    "shared.runs.models.RemediationEntry.as_json",  # the entry as the run's remediation stores it
    "shared.runs.models.RunEvent.payload",  # the event's data as webhooks deliver it
    "shared.notifications.slack.approval_message",  # a Slack Block Kit message body
}
_UNTYPED_RETURN = re.compile(r"\bRow\b|\bDeferred\b|dict\[str, (?:Any|object)\]|Mapping\[str, Any\]|^Any$|list\[dict")


def untyped_returns(path: Path, module: str) -> Iterator[str]:
    """``module.[Class.]function`` of each public function in ``path`` whose return annotation is a
    row, a deferred answer, an untyped mapping or Any."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    scopes: list[tuple[str, list[ast.stmt]]] = [(module, tree.body)]
    scopes += [(f"{module}.{node.name}", node.body) for node in tree.body
               if isinstance(node, ast.ClassDef) and not node.name.startswith("_")]
    for prefix, body in scopes:
        for node in body:
            if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.returns is not None
                    and _UNTYPED_RETURN.search(ast.unparse(node.returns))):
                yield f"{prefix}.{node.name}"


def test_contexts_return_models_not_rows() -> None:
    found = set()
    for ctx in _contexts():
        for path in sorted((SHARED / ctx).rglob("*.py")):
            if "adapters" not in path.parts:
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                found |= set(untyped_returns(path, module))
    assert found - JSON_RETURNS == set(), "return a model (pydantic or a dataclass), not a row or a dict"
    assert JSON_RETURNS - found == set(), "an allowed JSON return is gone: take it off JSON_RETURNS"


def test_untyped_returns_sees_rows_mappings_and_any(tmp_path: Path) -> None:
    code = tmp_path / "m.py"
    code.write_text("from typing import Any\n"
                    "def a() -> Row: ...\n"
                    "def b() -> dict[str, Any]: ...\n"
                    "class S:\n"
                    "    def c(self) -> list[Row]: ...\n"
                    "    def d(self) -> Deferred: ...\n"
                    "    def e(self) -> Page[RunOut]: ...\n"
                    "    def _f(self) -> Row: ...\n"
                    "def g() -> Any: ...\n"
                    "def h() -> RunOut | None: ...\n")
    assert sorted(untyped_returns(code, "m")) == ["m.S.c", "m.S.d", "m.a", "m.b", "m.g"]


# -- no library internals -----------------------------------------------------

# Underscore names that are their library's documented public API.
PUBLIC_UNDERSCORE = frozenset({"os._exit", "sys._getframe"})
PYTHON_DIRS = ("functions", "shared", "jobs", "byoc", "runtime", "bench", "agents", "tests")


def _own_top_levels() -> set[str]:
    """Top-level names importable from this repository (its packages, and the tests' own modules)."""
    names = {d for d in PYTHON_DIRS if (ROOT / d).is_dir()}
    for folder in (ROOT / "tests", ROOT / "tests" / "e2e", ROOT / "tests" / "unit", ROOT / "tests" / "contract"):
        names |= {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}
    return names


def library_privates(source: str, own: set[str]) -> list[tuple[int, str]]:
    """``(line, name)`` for each private name of a library the code imports or reaches through a name
    it imported: ``from lib import _x``, ``import lib._x``, ``lib._x``, ``lib.sub._x``, ``Class._x``
    (a dunder is not private). An instance's private attribute is beyond a static look; review
    catches those."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> the library module it is bound to
    found: list[tuple[int, str]] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in own:
                    continue
                if any(private(part) for part in alias.name.split(".")):
                    found.append((node.lineno, alias.name))
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in own:
                continue
            for alias in node.names:
                qualified = f"{node.module}.{alias.name}"
                if any(private(part) for part in qualified.split(".")) and qualified not in PUBLIC_UNDERSCORE:
                    found.append((node.lineno, qualified))
                modules[alias.asname or alias.name] = qualified
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                qualified = ".".join([modules[base.id], *reversed(chain)])
                if qualified not in PUBLIC_UNDERSCORE:
                    found.append((node.lineno, qualified))
    return found


def test_no_private_name_of_a_library_is_used() -> None:
    own = _own_top_levels()
    offences = []
    for folder in PYTHON_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else []:
            for line, name in library_privates(path.read_text(encoding="utf-8"), own):
                offences.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert offences == [], "library internals in use (use the public API, or say why not in docs/):\n" + "\n".join(offences)


@pytest.mark.parametrize(("source", "names"), [
    ("from fakepay.resources import Invoice\nInvoice._api_create", ["fakepay.resources.Invoice._api_create"]),
    ("from fakepay.resources import Invoice\nInvoice(x=1)._finalize()", []),  # an instance's: not seen
    ("import somedriver.core\nsomedriver.core._write(b'')", ["somedriver.core._write"]),
    ("from somedriver import core\ncore._flush()", ["somedriver.core._flush"]),
    ("from stripe._error import APIError", ["stripe._error.APIError"]),
    ("import os\nos._exit(0)\nos.__name__", []),
    ("import shared.kernel\nshared.kernel._x", []),
])
def test_library_privates_finds_module_level_private_names(source: str, names: list[str]) -> None:
    assert [name for _, name in library_privates(source, {"shared"})] == names
