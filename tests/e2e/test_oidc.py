"""gcp mode's identity provider: its JWKS found through OIDC discovery, users matched by verified
email only — through the gateway, against a stand-in provider on the test suite's RecordingServer."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support.http import Recorded, RecordingServer, Reply

from functions.gateway import create_gateway
from shared.identity.adapters.oidc_verifier import OidcVerifier
from shared.identity.service import IdentityService
from shared.kernel.errors import Unavailable

AUDIENCE = "marketplace-api"


class Provider:
    """An OpenID provider: the discovery document at the issuer's well-known path, and its JWKS."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.discovery_issuer: str | None = None  # what the document claims (None: the real issuer)
        self.server = RecordingServer(self._answer)
        self.issuer = f"{self.server.url}/tenant"

    def _answer(self, request: Recorded) -> Reply:
        if request.path == "/tenant/.well-known/openid-configuration":
            return Reply(200, {"issuer": self.discovery_issuer or self.issuer,
                               "jwks_uri": f"{self.server.url}/tenant/keys",
                               "id_token_signing_alg_values_supported": ["RS256"]})
        if request.path == "/tenant/keys":
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
            return Reply(200, {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})
        return Reply(404, {"error": "not found"})

    def token(self, email: str, **claims: Any) -> str:
        now = int(time.time())
        return jwt.encode({"iss": self.issuer, "aud": AUDIENCE, "sub": f"idp|{email}", "email": email,
                           "iat": now, "exp": now + 300, **claims}, self.key, algorithm="RS256",
                          headers={"kid": "k1"})

    def paths(self) -> list[str]:
        return [r.path for r in self.server.received()]


@pytest.fixture
def provider() -> Iterator[Provider]:
    stand_in = Provider()
    yield stand_in
    stand_in.server.close()


def provider_gateway(container: Any, verifier: OidcVerifier) -> Any:
    """The gateway as gcp mode wires identity: tokens from the provider, users by email."""
    identity = IdentityService(container.db, container.users, container.audit, verifier, None,
                               access_ttl=900, refresh_ttl=3600)
    return create_gateway(dataclasses.replace(container, identity=identity))


def me(app: Any, token: str) -> Any:
    return app.test_client().get("/me", headers={"Authorization": f"Bearer {token}"})


def test_the_jwks_is_found_through_the_issuers_discovery_document(container, provider, make_user):
    app = provider_gateway(container, OidcVerifier(issuer=provider.issuer, audience=AUDIENCE))
    known = make_user("known")
    resp = me(app, provider.token(known.email, email_verified=True))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["user"]["email"] == known.email
    assert provider.paths() == ["/tenant/.well-known/openid-configuration", "/tenant/keys"]
    # Discovered once: the next token needs neither the document nor (same key id) the keys.
    assert me(app, provider.token(known.email, email_verified=True, jti="2")).status_code == 200
    assert provider.paths() == ["/tenant/.well-known/openid-configuration", "/tenant/keys"]


def test_an_explicit_jwks_url_wins_over_discovery(container, provider, make_user):
    verifier = OidcVerifier(issuer=provider.issuer, audience=AUDIENCE, jwks_url=f"{provider.server.url}/tenant/keys")
    app = provider_gateway(container, verifier)
    assert me(app, provider.token(make_user().email, email_verified=True)).status_code == 200
    assert provider.paths() == ["/tenant/keys"]


def test_a_discovery_document_for_another_issuer_is_refused(provider):
    provider.discovery_issuer = "https://evil.example"
    verifier = OidcVerifier(issuer=provider.issuer, audience=AUDIENCE)
    with pytest.raises(Unavailable, match="another issuer"):
        verifier.verify(provider.token("x@example.com", email_verified=True))
    provider.discovery_issuer = None  # fixed at the provider: the next token discovers again
    assert verifier.verify(provider.token("x@example.com", email_verified=True)).email_verified


@pytest.mark.parametrize("verified", [False, "false", None], ids=["false", "string-false", "absent"])
def test_an_unverified_email_never_matches_a_user_nor_creates_one(container, provider, make_user, verified):
    app = provider_gateway(container, OidcVerifier(issuer=provider.issuer, audience=AUDIENCE))
    victim = make_user("victim")
    claims = {} if verified is None else {"email_verified": verified}
    resp = me(app, provider.token(victim.email, **claims))
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "invalid_token"
    stranger = f"stranger-{time.time_ns()}@example.com"
    assert me(app, provider.token(stranger, **claims)).status_code == 401
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM users WHERE lower(email) = lower(%s)", stranger) == 0
    # The same provider's verified token for the victim is the victim.
    resp = me(app, provider.token(victim.email, email_verified=True))
    assert resp.status_code == 200 and resp.get_json()["user"]["email"] == victim.email


def test_keys_out_of_reach_are_a_503_not_a_401(provider):
    """The provider's JWKS cannot be fetched: ours to retry (503), not the caller's bad token."""
    closed = RecordingServer(lambda request: Reply(200, {}))
    url = f"{closed.url}/keys"
    closed.close()  # nothing listens there any more
    verifier = OidcVerifier(issuer=provider.issuer, audience=AUDIENCE, jwks_url=url)
    with pytest.raises(Unavailable, match="keys could not be fetched"):
        verifier.verify(provider.token("x@example.com", email_verified=True))
