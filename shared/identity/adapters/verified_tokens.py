"""A short-lived memo of verified access tokens, so a client's every request does not repeat the
signature check (the costliest part of authenticating one).

An entry is the token string → its claims, kept until the token expires or ``ttl`` seconds pass,
whichever comes first, so a key withdrawn from a JWKS stops being honoured within ``ttl``. Only
tokens that passed verification are kept; a failure is never cached. Bounded: the oldest entries
go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from shared.identity.ports import TokenClaims


class VerifiedTokens:
    """Thread-safe, bounded, expiring map from a verified token to its claims."""

    def __init__(self, *, ttl: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[TokenClaims, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> TokenClaims | None:
        """The claims of ``token`` if it was verified and is still within its time."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        claims, until = entry
        if time.time() >= until:
            with self._lock:
                self._entries.pop(token, None)
            return None
        return claims

    def put(self, token: str, claims: TokenClaims) -> None:
        """Remember a token that just passed verification."""
        until = min(float(claims.expires_at), time.time() + self.ttl)
        with self._lock:
            self._entries[token] = (claims, until)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def verify(self, token: str, check: Callable[[str], TokenClaims]) -> TokenClaims:
        """The remembered claims of ``token``, or ``check(token)``'s, remembered when it passes
        (an exception from ``check`` propagates and nothing is remembered)."""
        claims = self.get(token)
        if claims is None:
            claims = check(token)
            self.put(token, claims)
        return claims
