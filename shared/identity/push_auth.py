"""gcp mode: requests that Google services (Cloud Tasks, Cloud Scheduler) push to a function.

Each carries a Google-signed OIDC token of the service account the push was configured with,
for an audience that names the target. ``PushAuth`` accepts exactly that account's tokens.
"""

from __future__ import annotations

from shared.identity.ports import TokenVerifier
from shared.kernel.errors import Forbidden, Unauthorized


class PushAuth:
    """Accepts a bearer token that ``verifier`` checks (issuer, audience, expiry, key) and whose
    ``email`` is ``service_account``."""

    def __init__(self, verifier: TokenVerifier, service_account: str) -> None:
        if not service_account:
            raise ValueError("a push target needs the service account its callers sign as")
        self.verifier = verifier
        self.service_account = service_account

    def check(self, authorization: str) -> None:
        """Raise ``Unauthorized``/``Forbidden`` unless ``authorization`` is such a token."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send the push's OIDC token as 'Authorization: Bearer <token>'")
        claims = self.verifier.verify(token.strip())
        if claims.email != self.service_account or not claims.email_verified:
            raise Forbidden("this endpoint only accepts pushes from its configured service account")
