"""The memo of verified tokens: it saves signature checks, never a check that matters."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from shared.identity.adapters.local_issuer import LocalIssuer
from shared.identity.adapters.verified_tokens import VerifiedTokens
from shared.identity.ports import TokenClaims
from shared.kernel.errors import Unauthorized


def _claims(expires_in: float) -> TokenClaims:
    return TokenClaims(subject="usr_1", email="a@example.com", issuer="i", expires_at=int(time.time() + expires_in))


def test_entries_end_at_the_earlier_of_expiry_and_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    memo = VerifiedTokens(ttl=60)
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    memo.put("long", _claims(3600))
    memo.put("short", _claims(10))
    assert memo.get("long") is not None and memo.get("short") is not None
    now[0] += 11
    assert memo.get("short") is None  # expired: gone, not served
    assert memo.get("long") is not None
    now[0] += 50
    assert memo.get("long") is None  # the ttl bounds a withdrawn key's afterlife
    assert memo.get("never-verified") is None


def test_the_memo_is_bounded_oldest_first() -> None:
    memo = VerifiedTokens(max_entries=3)
    for i in range(5):
        memo.put(f"t{i}", _claims(3600))
    assert [memo.get(f"t{i}") is not None for i in range(5)] == [False, False, True, True, True]


def test_an_expired_token_is_refused_even_after_it_was_verified() -> None:
    keys = Path(tempfile.mkdtemp())
    issuer = LocalIssuer(keys, issuer="iss", audience="aud")
    token = issuer.issue(subject="usr_1", email="a@example.com", ttl_seconds=1)
    assert issuer.verify(token).subject == "usr_1"
    assert issuer.verify(token).subject == "usr_1"  # from the memo
    time.sleep(2.1)
    with pytest.raises(Unauthorized) as err:
        issuer.verify(token)
    assert err.value.code == "token_expired"


def test_a_failed_verification_is_not_remembered() -> None:
    keys = Path(tempfile.mkdtemp())
    issuer = LocalIssuer(keys, issuer="iss", audience="aud")
    token = issuer.issue(subject="usr_1", email="a@example.com", ttl_seconds=60)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            issuer.verify(tampered)


def test_verify_checks_once_and_never_remembers_a_failure() -> None:
    memo = VerifiedTokens()
    calls: list[str] = []

    def check(token: str) -> TokenClaims:
        calls.append(token)
        if token == "bad":
            raise Unauthorized("nope")
        return _claims(3600)

    assert memo.verify("good", check) == memo.verify("good", check)
    assert calls == ["good"]
    for _ in range(2):
        with pytest.raises(Unauthorized):
            memo.verify("bad", check)
    assert calls == ["good", "bad", "bad"]
