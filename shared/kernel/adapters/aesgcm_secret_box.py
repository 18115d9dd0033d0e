"""AES-256-GCM secret box with a key ring: the local mode's keys live in the data directory.

Format of a sealed value (all binary)::

    0x01 | key id (8 bytes) | nonce (12 bytes) | ciphertext ‖ tag (16 bytes)

The key id is the first 8 bytes of SHA-256 of the key, so a value names the key that sealed it
and ``unseal`` picks that key from the ring; sealing always uses the current (first) key. The
version byte, the key id and the caller's context are the associated data, so none of them can
be altered or swapped without the tag failing.

This single platform key ring came before the per-org envelope keys of SPEC §5 ("secrets",
``shared/secrets``): it now only opens what it sealed then, until the background re-seal moves it.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.kernel.ids import new_id
from shared.kernel.secret_box import SecretBoxError

_VERSION = b"\x01"
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_KEY_BYTES = 32
_HEADER_BYTES = len(_VERSION) + _KEY_ID_BYTES
_KEY_FILE_GLOB = "secretbox-*.key"


def key_id(key: bytes) -> bytes:
    """The 8-byte identifier a sealed value carries for ``key``."""
    return hashlib.sha256(key).digest()[:_KEY_ID_BYTES]


class AesGcmSecretBox:
    """Seals with the first key of the ring; unseals with whichever ring key sealed the value."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a secret box needs at least one key")
        for key in keys:
            if len(key) != _KEY_BYTES:
                raise ValueError(f"secret box keys must be {_KEY_BYTES} bytes")
        self._current = (key_id(keys[0]), AESGCM(keys[0]))
        self._ring = {key_id(key): AESGCM(key) for key in keys}

    @classmethod
    def from_encoded(cls, encoded: str) -> AesGcmSecretBox:
        """Keys given as comma-separated base64 (standard or URL-safe), the current key first."""
        keys = []
        for part in (p.strip() for p in encoded.split(",")):
            if not part:
                continue
            try:
                keys.append(base64.b64decode(part.replace("-", "+").replace("_", "/") + "=" * (-len(part) % 4),
                                             validate=True))
            except binascii.Error as exc:
                raise ValueError("a secret box key is not valid base64") from exc
        return cls(keys)

    @classmethod
    def from_key_dir(cls, keys_dir: Path) -> AesGcmSecretBox:
        """The ring kept in ``keys_dir`` (``secretbox-<id>.key``), creating a first key if there is none.

        The newest file is the current key; adding a file rotates, and older files keep opening
        what they sealed. Creation holds a file lock, so concurrent processes agree on one key.
        """
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(keys_dir / ".secretbox.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            paths = sorted(keys_dir.glob(_KEY_FILE_GLOB))
            if not paths:
                path = keys_dir / f"secretbox-{new_id('kid')}.key"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode() + "\n")
                paths = [path]
            encoded = [p.read_text(encoding="ascii").strip() for p in reversed(paths)]
        return cls.from_encoded(",".join(encoded))

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        """Encrypt with the current key under ``context``."""
        kid, aead = self._current
        header = _VERSION + kid
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return header + nonce + aead.encrypt(nonce, plaintext, header + context.encode())

    def unseal(self, sealed: bytes, *, context: str) -> bytes:
        """Decrypt a value sealed under ``context`` by any key of the ring."""
        sealed = bytes(sealed)
        if len(sealed) < _HEADER_BYTES + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise SecretBoxError("the sealed value is malformed")
        header = sealed[:_HEADER_BYTES]
        aead = self._ring.get(header[1:])
        if aead is None:
            raise SecretBoxError("the sealed value was made with a key this box does not hold")
        nonce = sealed[_HEADER_BYTES:_HEADER_BYTES + _NONCE_BYTES]
        try:
            return aead.decrypt(nonce, sealed[_HEADER_BYTES + _NONCE_BYTES:], header + context.encode())
        except InvalidTag as exc:
            raise SecretBoxError("the sealed value does not authenticate (tampered, or another context)") from exc
