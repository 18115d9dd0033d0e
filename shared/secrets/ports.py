"""The key-encryption key (KEK): what wraps every owner's data keys.

Two adapters: a key ring of files in the data directory (local mode) and a Cloud KMS key (gcp).
The envelope logic (``shared/secrets/service.py``) is written once above this port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class KekError(Exception):
    """A wrapped key could not be unwrapped: unknown KEK version, tampered, or another binding."""


@dataclass(frozen=True)
class Wrapped:
    """A data key wrapped by the KEK, and the KEK version that wrapped it."""

    ciphertext: bytes
    kek_version: str


class KeyEncryptionKey(Protocol):
    """Wraps and unwraps 32-byte data keys, bound to associated data.

    Contract: ``unwrap(wrap(k, aad).ciphertext, kek_version=…, aad=aad) == k``; any other ``aad``,
    or a changed ciphertext, raises ``KekError``. After a rotation (a new current version) every
    older version still unwraps what it wrapped, until the operator retires it.
    """

    def current_version(self) -> str:
        """The version new wraps use (may change while the process runs: a rotation)."""
        ...

    def wrap(self, key: bytes, *, aad: bytes) -> Wrapped:
        """Encrypt ``key`` with the current version."""
        ...

    def unwrap(self, ciphertext: bytes, *, kek_version: str, aad: bytes) -> bytes:
        """Decrypt what ``wrap`` returned (with any version still held)."""
        ...

    def rotate(self) -> str:
        """Make a new version the current one (older ones keep unwrapping); returns it."""
        ...
