"""No secret in a log line, an error or a shown URL: the redaction rule (shared/kernel/redaction.py).

Properties over generated text (hypothesis): every format of the table is masked wherever it sits
in surrounding text; URLs lose their user-info and query values whatever those hold; redaction is
idempotent; text without credentials comes out unchanged; the literal prefilter never skips a match.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from support.secrets import secret_table

from shared.kernel.ids import new_id, new_secret
from shared.kernel.jsonlog import JsonFormatter, configure_logging
from shared.kernel.redaction import (
    _KEY_TRIGGERS,
    _SECRET_KEYS_WHOLE,
    _SECRET_WORDS,
    REDACTED,
    SHAPES,
    _combined,
    _named_values,
    _replace,
    mask_url,
    redact,
    redact_text,
)

TABLE = secret_table()


def _format(msg: str, *args: object, **fields: object) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
    record.fields = fields
    return JsonFormatter().format(record)


def test_the_table_holds_at_least_twenty_formats():
    assert len({case.name for case in TABLE}) >= 20


@pytest.mark.parametrize("case", TABLE, ids=[case.name for case in TABLE])
def test_every_format_is_masked_in_text_in_a_log_line_and_in_structures(case):
    for shown in (redact_text(case.text), _format("got %s", case.text), _format("x", note=case.text),
                  json.dumps(redact({"value": case.text, "list": [case.text]}))):
        for secret in case.secrets:
            assert secret not in shown, (case.name, shown)
    assert REDACTED in redact_text(case.text)


_AROUND = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=30)
_SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", ": ", " (", "; ", "\"", "'", "|", " -> "])


@given(st.sampled_from(TABLE), _AROUND, _SEPARATORS, _SEPARATORS, _AROUND)
def test_a_secret_anywhere_in_surrounding_text_is_masked(case, before, left, right, after):
    text = before + left + case.text + right + after
    shown = redact_text(text)
    for secret in case.secrets:
        assert secret not in shown
    assert redact_text(shown) == shown


_URL_VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\"'<>\\`&#"),
                     min_size=1, max_size=40)
_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,15}", fullmatch=True)


@given(st.sampled_from(["https", "http", "s3", "gs", "postgresql", "ftp"]),
       st.one_of(st.none(), _URL_VALUE.filter(lambda v: "@" not in v and "/" not in v and "?" not in v)),
       st.lists(st.tuples(_NAME, _URL_VALUE.filter(lambda v: "[" not in v)), min_size=1, max_size=4))
@example("https", "user:p%40ss", [("X-Amz-Signature", "0a1b2c3d")])
def test_urls_lose_user_info_and_every_query_value_by_construction(scheme, userinfo, params):
    query = "&".join(f"{k}={v}" for k, v in params)
    url = f"{scheme}://{userinfo + '@' if userinfo else ''}files.example.com/a/b.csv?{query}"
    shown = redact_text(f"cannot fetch {url}: timed out")
    masked = mask_url(url)
    assert masked.startswith(f"{scheme}://") and "files.example.com/a/b.csv?" in masked
    assert masked in shown
    for name, _ in params:
        assert f"{name}={REDACTED}" in masked
    if userinfo:
        assert f"{scheme}://{REDACTED}@files.example.com" in masked
    assert masked.count(REDACTED) == len(params) + bool(userinfo)


def test_mask_url_keeps_what_says_where_and_nothing_else():
    assert mask_url("https://h.example/p") == "https://h.example/p"
    assert mask_url("https://u:p@h.example:8443/p?a=1&b=&c#k=v") == (
        f"https://{REDACTED}@h.example:8443/p?a={REDACTED}&b=&{REDACTED}#k={REDACTED}")
    assert redact_text("redirect=https%3A%2F%2Fh.example%2Fp%3Ftoken%3Dabc123") == (
        "redirect=https%3A%2F%2Fh.example%2Fp%3Ftoken%3D%5BREDACTED%5D")
    assert "T0AAA/B0BBB/xyz" not in mask_url("https://hooks.slack.com/services/T0AAA/B0BBB/xyz")


_WORDS = st.sampled_from([
    "the", "run", "failed", "token", "expired", "key", "rotated", "secret", "missing", "password", "reset",
    "Basic", "authentication", "Asia", "region", "sk", "live", "pat", "hooks", "private", "keys", "design",
    "org_01hzy3k2m9", "run_01hzy3k2m9", "GET", "/orgs/org_1/api-keys", "201", "https://example.com/docs/page",
    "s3://bucket/path/file.csv", "42.5", "status=failed", "attempt=2", "user=bob", "eyes", "1//",
])


@given(st.lists(st.tuples(_WORDS, st.sampled_from([" ", ", ", ". ", "\n", ": "])), max_size=25))
def test_text_without_credentials_is_unchanged(pieces):
    text = "".join(word + sep for word, sep in pieces)
    assert redact_text(text) == text


_FRAGMENTS = st.sampled_from([
    "mk.", "rt.", "eyJ", "EYJ", "Bearer ", "bEaReR\t", "Basic ", "whsec_", "sk_test_", "sk_live_", "ghp_", "glpat-",
    "xoxb-", "AIza", "AKIA", "-----BEGIN RSA PRIVATE KEY-----", "-----END PRIVATE KEY-----", ".", "_", "-", " ",
    "key_", "abcdefghijklmnopqrstuvwxyz0123456789", "Z9+/=", "https://", "u:p@", "?", "&", "=", "#", "%3A%2F%2F",
    "password", "token", "sig", "\"", ":", "[REDACTED]", "hooks.slack.com/services/", "Authorization: ", "%20",
])
_MIXED = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12)), max_size=30).map("".join)


@given(_MIXED)
def test_the_literal_prefilter_never_skips_a_match(text):
    """redact_text compiles only the shapes whose literals occur: it must agree with all of them."""
    every = frozenset(range(len(SHAPES))) | {-1, -2}
    named = _named_values(text, text.lower())
    assert redact_text(text) == _combined(every).sub(_replace, named)


@given(_MIXED)
def test_redaction_is_idempotent(text):
    once = redact_text(text)
    assert redact_text(once) == once


def test_every_shape_names_its_lower_case_trigger_literals():
    for shape in SHAPES:
        if shape.name == "AWS secret access key":
            assert not shape.triggers  # the one shape without a literal: tried on every long text
            continue
        assert shape.triggers and all(lit == lit.lower() for lit in shape.triggers), shape.name
    # Secret names are found by their literals: each name holds one.
    for word in (*_SECRET_WORDS, *_SECRET_KEYS_WHOLE):
        assert any(literal in word for literal in _KEY_TRIGGERS), word


@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=40))
def test_platform_credentials_never_survive(prefix):
    key = f"mk.{new_id('key')}.{new_secret()}"
    refresh = f"rt.{new_id('rtk')}.{new_secret()}"
    line = _format("%s key=%s refresh=%s", prefix, key, refresh)
    assert key.split(".")[2] not in line and refresh.split(".")[2] not in line


def test_structures_mask_secret_named_keys_but_keep_counts_and_flags():
    assert redact({"password": "hunter2", "nested": {"api_key": "k", "ok": "fine"}, "list": [{"token": "t"}],
                   "secret_included": True, "token_count": 3, "keys": ["a"]}) == {
        "password": REDACTED, "nested": {"api_key": REDACTED, "ok": "fine"}, "list": [{"token": REDACTED}],
        "secret_included": True, "token_count": 3, "keys": ["a"]}
    line = json.loads(_format("hello", authorization="Bearer zzz", client_secret="s3cr3t", user="u1"))
    assert line["authorization"] == REDACTED and line["client_secret"] == REDACTED and line["user"] == "u1"
    assert redact({"tokens": "abc"}, keys=False) == {"tokens": "abc"}


def test_every_handler_sees_records_redacted(caplog):
    configure_logging("DEBUG", io.StringIO())
    try:
        secret = "ghp_" + "a1B2c3D4e5" * 4
        try:
            raise RuntimeError(f"cannot reach https://h.example/x?token={secret}")
        except RuntimeError:
            logging.getLogger("lib").exception("failed with %s", secret)
    finally:
        logging.getLogger().handlers = [h for h in logging.getLogger().handlers
                                        if h.get_name() != "marketplace-json"]
    assert "RuntimeError" in caplog.text and "failed with" in caplog.text
    assert secret not in caplog.text and secret not in caplog.records[-1].getMessage()


def test_messages_that_name_credentials_stay_readable():
    for text in ("send 'Authorization: Bearer <access token or API key>'", "Basic authentication is off",
                 "the refresh token was reused", "GET /orgs/org_1/api-keys 201", "design=blue"):
        assert redact_text(text) == text


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


def test_a_bare_aws_secret_key_is_masked_but_digests_and_ids_are_not():
    key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert key not in redact_text(f"the key {key} leaked")
    assert key not in redact_text(key)
    for innocent in ("da39a3ee5e6b4b0d3255bfef95601890afd80709",  # a SHA-1 in hex: no upper case
                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                     "run_agreehrg2iwqvxid65h4sv54fi and req_agreehrg2xetxrlvmrfm3dfh4y",
                     "a-40-character-text-WITH-dashes-is-no-key-at-all"):
        assert redact_text(innocent) == innocent
