"""No secret in a log line: the formatter redacts whatever logged it."""

from __future__ import annotations

import io
import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from shared.kernel.ids import new_id, new_secret
from shared.kernel.jsonlog import _ANY_PATTERN, _SHAPES, REDACTED, JsonFormatter, configure_logging, redact, redact_text


def _format(msg: str, *args: object, **fields: object) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
    record.fields = fields
    return JsonFormatter().format(record)


@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=40))
def test_platform_credentials_never_survive(prefix):
    key = f"mk.{new_id('key')}.{new_secret()}"
    refresh = f"rt.{new_id('rtk')}.{new_secret()}"
    line = _format("%s key=%s refresh=%s", prefix, key, refresh)
    assert key not in line and refresh not in line
    assert key.split(".")[2] not in line and refresh.split(".")[2] not in line


def test_jwt_bearer_private_keys_and_named_fields():
    jwt_like = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"
    assert jwt_like not in redact_text(f"token {jwt_like} end")
    assert "abc.def" not in redact_text("Authorization: Bearer abc.def")
    pem = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----"
    assert "MIGH" not in redact_text(pem)
    assert redact({"password": "hunter2", "nested": {"api_key": "k", "ok": "fine"}, "list": [{"token": "t"}]}) == {
        "password": REDACTED, "nested": {"api_key": REDACTED, "ok": "fine"}, "list": [{"token": REDACTED}]}
    line = json.loads(_format("hello", authorization="Bearer zzz", client_secret="s3cr3t", user="u1"))
    assert line["authorization"] == REDACTED and line["client_secret"] == REDACTED and line["user"] == "u1"


def test_a_whole_flow_logs_no_secret(make_org, anon):
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    try:
        admin, org_id = make_org()
        key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "k"}).body["key"]
        tokens = anon.post("/auth/token", json={"grant_type": "dev", "email": "flow-log@example.com"}).body
        anon.get("/me", token=key)
        anon.get("/me", token=tokens["access_token"])
        anon.post("/auth/token", json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        anon.post("/auth/token", json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
        anon.get("/me", token=key + "x")
        logging.getLogger("anything").error("oops %s", key)
    finally:
        logging.getLogger().handlers = [h for h in logging.getLogger().handlers
                                        if h.get_name() != "marketplace-json"]
    text = stream.getvalue()
    assert "GET /me" in text  # the access log was captured
    for secret in (key, key.split(".")[2], tokens["access_token"], tokens["refresh_token"],
                   tokens["refresh_token"].split(".")[2], admin.token):
        assert secret not in text


_FRAGMENTS = st.sampled_from(["mk.", "rt.", "eyJ", "EYJ", "Bearer ", "bEaReR\t", "whsec_", "sk_test_", "sk_live_",
                           "-----BEGIN RSA PRIVATE KEY-----", "-----END PRIVATE KEY-----", ".", "_", "-", " ",
                           "key_", "abcdefghijklmnopqrstuvwxyz0123456789", "Z9+/="])


@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12)), max_size=30).map("".join))
def test_the_substring_prefilter_never_skips_a_match(text):
    """redact_text skips the regex when no trigger literal occurs: it must agree with the regex."""
    assert redact_text(text) == _ANY_PATTERN.sub(REDACTED, text)


def test_every_shape_names_its_lower_case_trigger_literals():
    for literals, pattern in _SHAPES:
        assert literals and all(lit == lit.lower() for lit in literals), pattern
