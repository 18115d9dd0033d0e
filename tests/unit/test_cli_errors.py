"""The CLI's error codes are a catalogue (functions/cli_errors.py), as the API's are
(shared.kernel.errors.ErrorCode): no raise site names a code as a free string, every code the CLI
originates has its meaning beside it and in docs/CLI.md, and ``--json`` prints the same strings."""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.http import RecordingServer, Reply

from functions import cli_api
from functions.cli_api import Api, ApiError, hint_for
from functions.cli_config import ClientConfig
from functions.cli_errors import CliCode, OAuthCode, api_code, oauth_code
from shared.kernel.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "CLI.md"
CATALOGUE = ROOT / "functions" / "cli_errors.py"


def cli_modules() -> list[Path]:
    """The CLI's modules: every ``functions/cli*.py`` and ``functions/agent_cli.py``."""
    return [*sorted((ROOT / "functions").glob("cli*.py")), ROOT / "functions" / "agent_cli.py"]


# -- no free strings as codes ------------------------------------------------------------------

def _is_free_string(node: ast.expr) -> bool:
    """A string made at the site: a literal, an f-string, a concatenation or ``%`` of one, ``str(...)``."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _is_free_string(node.left) or _is_free_string(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str":
        return True
    return isinstance(node, ast.Tuple | ast.List | ast.Set) and any(_is_free_string(e) for e in node.elts)


def _is_code(node: ast.expr) -> bool:
    """``<anything>.code``: an error's code."""
    return isinstance(node, ast.Attribute) and node.attr == "code"


def free_codes(source: str) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for each place that names an error code as a free string: the code of an
    ``ApiError(status, code, ...)`` (or ``code=``), a comparison with ``x.code``, an assignment to
    ``x.code``, a key of ``_HINTS``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute) \
                and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "ApiError":
            code = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "code"), None)
            if code is not None and _is_free_string(code):
                yield node.lineno, f"ApiError(..., {ast.unparse(code)}, ...)"
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_code(side) for side in sides) and any(_is_free_string(side) for side in sides):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(_is_code(t) for t in targets) and _is_free_string(node.value):
                yield node.lineno, ast.unparse(node)
            hints = any(isinstance(t, ast.Name) and t.id == "_HINTS" for t in targets)
            if hints and isinstance(node.value, ast.Dict):
                for key in node.value.keys:
                    if key is not None and _is_free_string(key):
                        yield key.lineno, f"_HINTS[{ast.unparse(key)}]"


def test_no_error_code_is_a_free_string_in_the_cli() -> None:
    offences = [f"{path.relative_to(ROOT)}:{line}: {what}"
                for path in cli_modules() for line, what in free_codes(path.read_text(encoding="utf-8"))]
    assert offences == [], ("name a member of CliCode, OAuthCode (functions/cli_errors.py) or ErrorCode "
                            "(shared/kernel/errors.py), never a string:\n" + "\n".join(offences))


@pytest.mark.parametrize("source", [
    'raise ApiError(400, "bad_input", "message", "hint")',
    'raise cli_api.ApiError(400, f"bad_{kind}", "message")',
    'raise ApiError(status=400, code="no_org", message="m")',
    'ApiError(resp.status_code, str(body.get("error")), "m", "h")',
    'ApiError(0, "oidc_" + "unavailable", "m")',
    'if exc.code == "slow_down": pass',
    'if "version_exists" == exc.code: pass',
    'if exc.code in ("authorization_pending", "slow_down"): pass',
    'exc.code = "name_taken"',
    '_HINTS = {"token_expired": "sign in again"}',
    '_HINTS: dict[Code, str] = {ErrorCode.FORBIDDEN: "x", "not_found": "y"}',
])
def test_free_codes_finds_strings_where_a_code_belongs(source: str) -> None:
    assert list(free_codes(source)), source


@pytest.mark.parametrize("source", [
    'raise ApiError(400, CliCode.BAD_INPUT, "message", "hint")',
    'raise ApiError(resp.status_code, oauth_code(body.get("error"), resp.status_code), "m", "h")',
    'ApiError(resp.status_code, code, message, hint_for(resp.status_code, code))',
    'if exc.code == OAuthCode.SLOW_DOWN: pass',
    'if exc.code in (ErrorCode.VERSION_EXISTS, ErrorCode.PACKAGE_IMMUTABLE): pass',
    'if exc.status in (404, 405) and exc.message.startswith("no operation"): pass',
    'exc.hint = "raise the version"',
    '_HINTS = {ErrorCode.TOKEN_EXPIRED: "sign in again"}',
    'other = {"token_expired": 1}',
    'raise SystemExit("code")',
])
def test_free_codes_leaves_members_messages_and_hints_alone(source: str) -> None:
    assert list(free_codes(source)) == [], source


# -- the catalogue --------------------------------------------------------------------------

def _member_comments() -> dict[str, str]:
    """The comment on each member's line of functions/cli_errors.py, by the member's value."""
    tokens = list(tokenize.generate_tokens(io.StringIO(CATALOGUE.read_text(encoding="utf-8")).readline))
    comments = {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(CATALOGUE.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name in ("CliCode", "OAuthCode"):
            for item in node.body:
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
                    comment = comments.get(item.lineno, "")
                    found[str(item.value.value)] = re.sub(r"^#\s*(noqa: \w+ - )?", "", comment).strip()
    return found


def test_every_code_the_cli_knows_has_its_meaning_beside_it() -> None:
    comments = _member_comments()
    assert set(comments) == {*CliCode, *OAuthCode}
    assert [code for code, meaning in comments.items() if len(meaning) < 10] == []


def test_the_catalogues_share_no_code() -> None:
    """One string, one meaning: a code of the CLI's is none of the API's or the issuer's (and the
    hints, keyed by member, cannot collide)."""
    cli, oauth, api = set(map(str, CliCode)), set(map(str, OAuthCode)), set(map(str, ErrorCode))
    assert cli & api == set() and cli & oauth == set() and oauth & api == set()


def _doc_tables() -> dict[str, dict[str, list[str]]]:
    """docs/CLI.md's "Error codes" section: each ``###`` subsection's table rows, by the code in
    their first cell (the other cells after it)."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("\n## Error codes\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[str, list[str]]] = {}
    for part in section.split("\n### ")[1:]:
        title, _, body = part.partition("\n")
        rows: dict[str, list[str]] = {}
        for line in body.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.startswith("| `") and (match := re.fullmatch(r"`([a-z_0-9]+)`", cells[0])):
                rows[match.group(1)] = cells[1:]
        tables[title.strip()] = rows
    return tables


def test_docs_list_every_code_the_cli_originates_with_its_meaning() -> None:
    tables = _doc_tables()
    own, issuer = tables["The CLI's own codes"], tables["The OIDC issuer's codes"]
    assert set(own) == set(CliCode), "docs/CLI.md's table of the CLI's own codes is not CliCode"
    assert set(issuer) == set(OAuthCode), "docs/CLI.md's table of the issuer's codes is not OAuthCode"
    assert [code for code, (status, meaning, hint) in own.items() if not (status.isdigit() and meaning and hint)] == []
    assert [code for code, (meaning, _) in issuer.items() if not meaning] == []


def test_docs_list_every_api_code_the_cli_raises_itself() -> None:
    raised = set()
    for path in cli_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ApiError" \
                    and len(node.args) > 1 and isinstance(code := node.args[1], ast.Attribute) \
                    and isinstance(code.value, ast.Name) and code.value.id == "ErrorCode":
                raised.add(str(ErrorCode[code.attr]))
    assert raised, "no raise site found: is the check still looking at the right calls?"
    assert set(_doc_tables()["The API's codes the CLI also raises itself"]) == raised


def test_docs_list_the_hints_as_the_cli_gives_them() -> None:
    documented = {code: cells[0] for code, cells in _doc_tables()["Hints by the API's code"].items()}
    assert documented == {str(code): hint_for(400, code) for code in cli_api._HINTS}
    assert all(isinstance(code, ErrorCode | CliCode | OAuthCode) for code in cli_api._HINTS)
    assert cli_api.SERVER_FAILURE_HINT in DOCS.read_text(encoding="utf-8")


# -- parsing what was answered ----------------------------------------------------------------

def test_codes_are_parsed_into_their_catalogue_and_unknown_ones_kept_as_sent() -> None:
    assert api_code("not_found", 404) is ErrorCode.NOT_FOUND
    assert oauth_code("slow_down", 400) is OAuthCode.SLOW_DOWN
    assert oauth_code("invalid_grant", 400) is ErrorCode.INVALID_GRANT  # the API's name for the same thing
    newer = api_code("quota_exhausted", 403)
    assert newer == "quota_exhausted" and not isinstance(newer, ErrorCode | CliCode | OAuthCode)
    assert api_code(None, 502) == "502" and oauth_code("", 400) == "400"


@pytest.mark.parametrize(("reply", "code", "message", "hint"), [
    (Reply(404, {"error": {"code": "not_found", "message": "agent not found"}}), ErrorCode.NOT_FOUND,
     "agent not found", "check the name or id"),
    (Reply(403, {"error": {"code": "quota_exhausted", "message": "no more"}}), "quota_exhausted", "no more", ""),
    (Reply(502, b"<html>Bad Gateway</html>"), "502", "HTTP 502: <html>Bad Gateway</html>", "the platform failed"),
    (Reply(500, {"error": {"message": "boom"}}), "500", "boom", "the platform failed"),
])
def test_an_answer_becomes_an_error_whose_json_keeps_the_code_string(reply: Reply, code: str, message: str,
                                                                     hint: str) -> None:
    with RecordingServer(lambda _request: reply) as server:
        api = Api(ClientConfig(), server.url)
        try:
            with pytest.raises(ApiError) as raised:
                api.get("/agents/x", auth=False)
        finally:
            api.close()
    error = raised.value
    assert error.code == code and error.message == message and error.hint.startswith(hint)
    printed = json.loads(json.dumps(error.as_dict()))
    assert printed == {"error": {"status": reply.status, "code": str(code), "message": message, "details": [],
                                 "hint": error.hint}}
    assert type(error.as_dict()["error"]["code"]) is str  # the enum's string, nothing else


def test_an_unreachable_platform_is_the_clis_own_code() -> None:
    api = Api(ClientConfig(), "http://127.0.0.1:9")
    try:
        with pytest.raises(ApiError) as raised:
            api.get("/health", auth=False)
    finally:
        api.close()
    assert raised.value.code is CliCode.UNREACHABLE and raised.value.status == 0
    assert raised.value.as_dict()["error"]["code"] == "unreachable"
