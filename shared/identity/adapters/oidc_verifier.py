"""gcp mode: access tokens from the configured OIDC issuer, verified against its JWKS."""

from __future__ import annotations

import jwt

from shared.identity.adapters.verified_tokens import VerifiedTokens
from shared.identity.ports import TokenClaims
from shared.kernel.errors import ErrorCode, Unauthorized

_ALGORITHMS = ["RS256", "ES256"]


class OidcVerifier:
    """Fetches (and caches) the issuer's signing keys by key id through PyJWT's JWKS client."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        url = jwks_url or f"{self.issuer}/.well-known/jwks.json"
        self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=3600)
        self._verified = VerifiedTokens()

    def verify(self, token: str) -> TokenClaims:
        """Check signature, key id, issuer, audience and expiry (a token verified in the last
        minute is answered from memory, expiry still checked)."""
        return self._verified.verify(token, self._verify)

    def _verify(self, token: str) -> TokenClaims:
        try:
            signing_key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, signing_key.key, algorithms=_ALGORITHMS, audience=self.audience,
                                issuer=self.issuer, options={"require": ["exp", "sub", "iss", "aud"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the access token has expired", code=ErrorCode.TOKEN_EXPIRED) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the access token is invalid: {exc}", code=ErrorCode.INVALID_TOKEN) from exc
        if claims.get("email") and claims.get("email_verified") is False:
            raise Unauthorized("the token's email is not verified", code=ErrorCode.INVALID_TOKEN)
        return TokenClaims(subject=str(claims["sub"]), email=claims.get("email"), issuer=str(claims["iss"]),
                           expires_at=int(claims["exp"]))
