"""The client CLI (issue 19 item 3) through a real ``marketplace up``: every command, its ``--json``
output parsed, an expired token refreshed, a bad id answered with the API's message and a hint,
never a traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from runs_support import FOCUS_SAMPLE
from support.client_cli import Platform, start_platform, stop_platform

pytestmark = pytest.mark.embedded_postgres

AGENT = "cost-anomaly-detector"


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    running = start_platform("marketplace-client-cli-")
    try:
        yield running
    finally:
        stop_platform(running)


@pytest.fixture(scope="module")
def installed(platform: Platform) -> dict:
    """Signed in, an org created, the built-in agent installed (on the sample the tests ship)."""
    platform.cli("login", "--email", "newcomer@example.com")
    org = platform.cli_json("orgs", "create", "CLI team")
    dep = platform.cli_json("install", AGENT, "--set", f"billing_source={FOCUS_SAMPLE}")
    return {"org": org, "deployment": dep}


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_login_stores_the_url_and_tokens_in_the_config_folder(platform: Platform) -> None:
    out = platform.cli_json("login", "--email", "first@example.com")
    assert out["url"] == platform.url and out["mode"] == "local" and out["email"] == "first@example.com"
    path = Path(out["config"])
    assert path == platform.home / "config" / "config.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it holds tokens
    stored = platform.config()
    assert stored["url"] == platform.url and stored["access_token"] and stored["refresh_token"].startswith("rt")
    assert stored["expires_at"] > time.time()


def test_orgs_create_list_and_use_remember_the_current_org(platform: Platform, installed: dict) -> None:
    org = installed["org"]
    assert org["name"] == "CLI team" and org["id"].startswith("org_")
    assert platform.config()["org_id"] == org["id"]
    other = platform.cli_json("orgs", "create", "Second team")
    listed = platform.cli_json("orgs", "list")
    assert {o["org_name"] for o in listed["items"]} >= {"CLI team", "Second team"}
    assert listed["current"] == other["id"]
    used = platform.cli_json("orgs", "use", "CLI team")  # by name
    assert used["org_id"] == org["id"] and platform.config()["org_id"] == org["id"]
    plain = platform.cli("orgs", "list").stdout.splitlines()
    assert plain[0].split("\t") == ["", "ID", "NAME", "ROLE"]  # piped: plain tab-separated text
    assert any(line.startswith("*\t" + org["id"]) for line in plain)


def test_agents_search_and_show_by_name(platform: Platform) -> None:
    found = platform.cli_json("agents", "search", "anomaly")
    assert [a["name"] for a in found["items"]] == [AGENT]
    detail = platform.cli_json("agents", "show", AGENT)
    assert detail["listing"]["name"] == AGENT and detail["versions"]
    by_id = platform.cli_json("agents", "show", detail["listing"]["id"])
    assert by_id["listing"]["id"] == detail["listing"]["id"]
    assert AGENT in platform.cli("agents", "search").stdout


def test_install_waits_until_ready_and_deployments_list_shows_it(platform: Platform, installed: dict) -> None:
    dep = installed["deployment"]
    assert dep["status"] == "ready" and dep["config"]["billing_source"] == str(FOCUS_SAMPLE)
    listed = platform.cli_json("deployments", "list")
    assert dep["id"] in {d["id"] for d in listed["items"]}


def test_run_follow_prints_live_log_lines_then_the_outputs(platform: Platform, installed: dict, tmp_path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"lookback_days": 30}))
    result = platform.cli("run", AGENT, "--input", str(inputs), "--follow", "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    logs, final = events[:-1], events[-1]
    assert logs and all(e["event"] == "log" for e in logs)
    assert [e["seq"] for e in logs] == sorted(e["seq"] for e in logs)
    assert final["event"] == "run" and final["status"] == "succeeded" and final["inputs"] == {"lookback_days": 30}
    assert final["outputs"]["totals"]["records"] > 0
    plain = platform.cli("run", AGENT, "--follow")  # plain text: the log, then the outputs
    assert "status      succeeded" in plain.stdout and "outputs:" in plain.stdout
    assert plain.stdout.index("fetch_billing_data") < plain.stdout.index("outputs:")


def test_runs_list_show_logs_and_cancel(platform: Platform, installed: dict) -> None:
    started = platform.cli_json("run", AGENT)  # without --follow: the run as created
    assert started["status"] in ("queued", "running", "succeeded")
    listed = platform.cli_json("runs", "list")
    assert listed["items"][0]["id"] == started["id"]
    cancelled = platform.cli_json("runs", "cancel", started["id"])
    assert cancelled["id"] == started["id"] and (cancelled["cancel_requested"] or cancelled["status"] == "succeeded")
    followed = platform.cli("logs", started["id"], "--follow")  # returns once the run is over
    assert f"run {started['id']}: " in followed.stdout
    shown = platform.cli_json("runs", "show", started["id"])
    assert shown["id"] == started["id"] and shown["status"] in ("cancelled", "succeeded")
    latest = platform.cli_json("runs", "show")  # no id: the latest run
    assert latest["id"] == started["id"]
    ok = platform.cli_json("runs", "list", "--status", "succeeded")["items"][0]
    lines = platform.cli_json("logs", ok["id"])["items"]
    assert lines and {"seq", "level", "step", "message"} <= set(lines[0])


def test_report_saves_the_html_or_answers_with_the_apis_message(platform: Platform, installed: dict) -> None:
    done = platform.cli_json("runs", "list", "--status", "succeeded")["items"][0]
    served = "/agents/{agent_id}/runs/{run_id}/report" in json.loads(
        platform.cli("openapi").stdout)["paths"]
    result = platform.cli("report", done["id"], "--json", check=False)
    _no_traceback(result)
    if served:
        saved = json.loads(result.stdout)
        assert result.returncode == 0 and saved["run_id"] == done["id"]
        assert "<html" in Path(saved["path"]).read_text().lower()
    else:  # the platform of this branch serves no report yet: the API's 404, said plainly
        assert result.returncode == 1
        assert json.loads(result.stdout)["error"]["status"] == 404
        assert "error: no operation at" in result.stderr and "hint: " in result.stderr


def test_a_bad_id_is_answered_with_the_apis_message_and_a_hint(platform: Platform, installed: dict) -> None:
    for args, message in [(["runs", "show", "run_doesnotexist"], "run not found"),
                          (["logs", "run_doesnotexist"], "run not found"),
                          (["agents", "show", "no-such-agent"], "agent not found"),
                          (["install", "no-such-agent"], "agent not found")]:
        result = platform.cli(*args, check=False)
        assert result.returncode == 1, result
        _no_traceback(result)
        assert f"error: {message}" in result.stderr and "hint: check the name or id" in result.stderr
        as_json = platform.cli(*args, "--json", check=False)
        assert json.loads(as_json.stdout)["error"] == {
            "status": 404, "code": "not_found", "message": message, "details": [],
            "hint": "check the name or id (marketplace agents search, deployments list and runs list show them)"}


def test_bad_input_is_refused_with_a_clear_message(platform: Platform, installed: dict, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = platform.cli("run", AGENT, "--input", str(bad), check=False)
    assert result.returncode == 1 and "holds no JSON object" in result.stderr
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"lookback_days": "many"}))
    result = platform.cli("run", AGENT, "--input", str(invalid), check=False)
    assert result.returncode == 1 and "error: " in result.stderr and "lookback_days" in result.stderr
    _no_traceback(result)
    usage = platform.cli("runs", "list", "--limit", "0", check=False)
    assert usage.returncode == 2 and "--limit" in usage.stderr


def _expired_copy(platform: Platform, token: str) -> str:
    """The same access token, signed by the platform's own key, expired a minute ago."""
    from cryptography.hazmat.primitives import serialization

    claims = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    key_file = platform.data_dir / "keys" / f"issuer-{header['kid']}.pem"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    now = int(time.time())
    return jwt.encode({**claims, "iat": now - 600, "exp": now - 60}, key, algorithm="ES256",  # type: ignore[arg-type]
                      headers={"kid": header["kid"]})


def test_an_expired_token_is_refreshed(platform: Platform, installed: dict) -> None:
    config_file = platform.home / "config" / "config.json"
    before = platform.config()
    # The API says the token expired (the stored expiry does not know it yet): refreshed, retried.
    expired = _expired_copy(platform, before["access_token"])
    config_file.write_text(json.dumps({**before, "access_token": expired, "expires_at": time.time() + 3600}))
    assert platform.cli_json("deployments", "list")["items"]
    after = platform.config()
    assert after["access_token"] != expired and after["refresh_token"] != before["refresh_token"]
    # The stored expiry has passed: refreshed before the call.
    config_file.write_text(json.dumps({**after, "access_token": expired, "expires_at": time.time() - 10}))
    assert platform.cli_json("orgs", "list")["items"]
    assert platform.config()["refresh_token"] != after["refresh_token"]
    # A refresh token that no longer works: sign in again, said plainly.
    config_file.write_text(json.dumps({**platform.config(), "access_token": expired, "expires_at": 0,
                                       "refresh_token": "rt.rtk_x.nope"}))
    result = platform.cli("runs", "list", check=False)
    assert result.returncode == 1 and "hint: sign in again: marketplace login" in result.stderr
    _no_traceback(result)
    platform.cli("login", "--email", "newcomer@example.com")


def test_without_a_platform_the_cli_says_to_start_one(tmp_path) -> None:
    from shared.kernel.net import free_port

    platform = Platform(url="", data_dir=tmp_path / "d", home=tmp_path,
                        env={**__import__("os").environ, "MARKETPLACE_CONFIG_DIR": str(tmp_path / "config"),
                             "MARKETPLACE_URL": f"http://127.0.0.1:{free_port()}"})
    result = platform.cli("login", "--email", "a@example.com", check=False)
    assert result.returncode == 1 and "cannot reach the platform" in result.stderr
    assert "marketplace up" in result.stderr
    _no_traceback(result)
    result = platform.cli("runs", "list", check=False)
    assert result.returncode == 1 and "you are not signed in" in result.stderr
