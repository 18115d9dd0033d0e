"""The local mode's token issuer: an ES256 key pair kept in the data directory."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.identity.adapters.verified_tokens import VerifiedTokens
from shared.identity.ports import TokenClaims
from shared.kernel.errors import ErrorCode, Unauthorized
from shared.kernel.ids import new_id

_ALG = "ES256"


class LocalIssuer:
    """Signs with the newest key; verifies with any key still in the directory (rotation)."""

    def __init__(self, keys_dir: Path, *, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._private: tuple[str, ec.EllipticCurvePrivateKey] = self._load_or_create(keys_dir)
        self._public: dict[str, Any] = {kid: key.public_key() for kid, key in self._all_keys(keys_dir)}
        self._verified = VerifiedTokens()

    @staticmethod
    def _all_keys(keys_dir: Path) -> list[tuple[str, ec.EllipticCurvePrivateKey]]:
        keys = []
        for path in sorted(keys_dir.glob("issuer-*.pem")):
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                keys.append((path.stem.removeprefix("issuer-"), key))
        return keys

    def _load_or_create(self, keys_dir: Path) -> tuple[str, ec.EllipticCurvePrivateKey]:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(keys_dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self._all_keys(keys_dir)
            if keys:
                return keys[-1]
            kid = new_id("kid")
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            path = keys_dir / f"issuer-{kid}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            return kid, key

    def issue(self, *, subject: str, email: str, ttl_seconds: int) -> str:
        """A signed access token."""
        now = int(time.time())
        kid, key = self._private
        claims = {"iss": self.issuer, "aud": self.audience, "sub": subject, "email": email,
                  "iat": now, "exp": now + ttl_seconds, "jti": new_id("jti")}
        return jwt.encode(claims, key, algorithm=_ALG, headers={"kid": kid})

    def verify(self, token: str) -> TokenClaims:
        """Check signature, key id, issuer, audience and expiry (a token verified in the last
        minute is answered from memory, expiry still checked)."""
        return self._verified.verify(token, self._verify)

    def _verify(self, token: str) -> TokenClaims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthorized("the access token is malformed", code=ErrorCode.INVALID_TOKEN) from exc
        public = self._public.get(str(kid))
        if public is None:
            raise Unauthorized("the access token was signed by an unknown key", code=ErrorCode.INVALID_TOKEN)
        try:
            claims = jwt.decode(token, public, algorithms=[_ALG], audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "iat", "sub", "iss", "aud"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the access token has expired", code=ErrorCode.TOKEN_EXPIRED) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the access token is invalid: {exc}", code=ErrorCode.INVALID_TOKEN) from exc
        return TokenClaims(subject=str(claims["sub"]), email=claims.get("email"), issuer=str(claims["iss"]),
                           expires_at=int(claims["exp"]))

    def public_jwks(self) -> dict[str, Any]:
        """The verification keys as a JWKS document."""
        keys = []
        for kid, public in self._public.items():
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": _ALG, "use": "sig"})
        return {"keys": keys}
