"""The platform key ring's port, from before the per-org data keys (``shared/secrets``).

Secrets are now sealed with each org's data key; this port remains only so that values the
platform key ring sealed earlier still open (``SecretKeys(legacy=...)``) until they are re-sealed.

A sealed value is bound to a ``context`` (for example ``webhook:wh_...``): opening it under any
other context fails, so a ciphertext copied from one row to another is useless. Implementations
must be authenticated (tampering is detected, never returns garbage) and must keep opening what
they sealed with a key that has since been rotated out of the "current" slot.
"""

from __future__ import annotations

from typing import Protocol


class SecretBoxError(Exception):
    """A sealed value could not be opened: tampered, wrong context, or sealed with an unknown key."""


class SecretBox(Protocol):
    """Authenticated encryption of small secrets, bound to a context string."""

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        """Encrypt ``plaintext`` with the current key; the result is opaque and self-describing."""
        ...

    def unseal(self, sealed: bytes, *, context: str) -> bytes:
        """Decrypt what ``seal`` produced under the same ``context``; raise ``SecretBoxError`` otherwise."""
        ...
