"""gcp mode: access tokens from the configured OIDC issuer, verified against its JWKS.

The JWKS is found through the issuer's discovery document
(``<issuer>/.well-known/openid-configuration``, its ``jwks_uri``: OpenID Connect Discovery 1.0),
read on the first token to verify; an explicit JWKS URL skips discovery.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any

import jwt

from shared.identity.adapters.verified_tokens import VerifiedTokens
from shared.identity.ports import TokenClaims
from shared.kernel.errors import ErrorCode, Unauthorized, Unavailable

_ALGORITHMS = ["RS256", "ES256"]
_DISCOVERY_TIMEOUT = 5.0


class OidcVerifier:
    """Fetches (and caches) the issuer's signing keys by key id through PyJWT's JWKS client."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self._jwks = self._client(jwks_url) if jwks_url else None
        self._discovery_lock = threading.Lock()
        self._verified = VerifiedTokens()

    @staticmethod
    def _client(url: str) -> jwt.PyJWKClient:
        return jwt.PyJWKClient(url, cache_keys=True, lifespan=3600)

    @property
    def discovery_url(self) -> str:
        """Where the issuer publishes its OpenID configuration."""
        return f"{self.issuer}/.well-known/openid-configuration"

    def verify(self, token: str) -> TokenClaims:
        """Check signature, key id, issuer, audience and expiry (a token verified in the last
        minute is answered from memory, expiry still checked)."""
        return self._verified.verify(token, self._verify)

    def _keys(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            with self._discovery_lock:
                if self._jwks is None:  # a failed discovery is tried again by the next token
                    self._jwks = self._client(self._discover())
        return self._jwks

    def _discover(self) -> str:
        try:
            with urllib.request.urlopen(self.discovery_url, timeout=_DISCOVERY_TIMEOUT) as resp:  # noqa: S310 - the configured issuer
                document: Any = json.load(resp)
        except (OSError, ValueError) as exc:
            raise Unavailable("the identity provider's discovery document could not be read") from exc
        if not isinstance(document, dict):
            raise Unavailable("the identity provider's discovery document is not a JSON object")
        # Discovery 1.0 §4.3: the document names the issuer it was fetched for, exactly.
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            raise Unavailable("the identity provider's discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise Unavailable("the identity provider's discovery document has no jwks_uri")
        return jwks_uri

    def _verify(self, token: str) -> TokenClaims:
        keys = self._keys()
        try:
            signing_key = keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, signing_key.key, algorithms=_ALGORITHMS, audience=self.audience,
                                issuer=self.issuer, options={"require": ["exp", "sub", "iss", "aud"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the access token has expired", code=ErrorCode.TOKEN_EXPIRED) from exc
        except jwt.PyJWKClientConnectionError as exc:  # the provider's keys are out of reach: ours to retry
            raise Unavailable("the identity provider's keys could not be fetched") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the access token is invalid: {exc}", code=ErrorCode.INVALID_TOKEN) from exc
        return TokenClaims(subject=str(claims["sub"]), email=claims.get("email"), issuer=str(claims["iss"]),
                           expires_at=int(claims["exp"]), email_verified=claims.get("email_verified") in (True, "true"))
