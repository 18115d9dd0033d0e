"""Access tokens: who signs them (local mode only) and who verifies them (both modes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TokenClaims:
    """The claims the platform relies on, already verified."""

    subject: str
    email: str | None
    issuer: str
    expires_at: int
    # True only when the issuer says so (``email_verified: true``): only a verified email may
    # stand for a user.
    email_verified: bool = False


class TokenVerifier(Protocol):
    """Verifies a bearer JWT (signature, issuer, audience, expiry, key id)."""

    def verify(self, token: str) -> TokenClaims:
        """Return the claims or raise ``shared.kernel.errors.Unauthorized``."""
        ...


class TokenIssuer(TokenVerifier, Protocol):
    """Signs access tokens; only the local mode has one."""

    def issue(self, *, subject: str, email: str, ttl_seconds: int) -> str:
        """A signed JWT for ``subject``."""
        ...
