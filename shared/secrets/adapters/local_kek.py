"""The local mode's key-encryption key: a ring of key files in the data directory's keys folder.

Each file ``kek-<id>.key`` holds 32 random bytes (base64); its id is its version and ids sort by
creation time, so the newest file is the current version. ``add_version`` rotates: new wraps use
the new file, every older file keeps unwrapping what it wrapped until ``SecretKeys.rewrap`` has
moved every data key over (then an operator may delete it). A process notices a new file within
``rescan_seconds``, and at once when asked to unwrap with a version it does not hold.

A wrapped key is ``nonce (12 bytes) | ciphertext ‖ tag``; the associated data is the caller's
(the data key's owner and version) followed by the KEK version.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import re
import secrets
import threading
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.kernel.ids import id_time, new_id
from shared.secrets.ports import KekError, Wrapped

_FILE = re.compile(r"kek-(?P<version>[a-z0-9_]+)\.key")
_KEY_BYTES = 32
_NONCE_BYTES = 12


def add_version(keys_dir: Path) -> str:
    """Create a new KEK file (the new current version) and return its version."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The newest file is the current one, by its id's time: make this one strictly newer than
    # every file there (two rotations within a millisecond would otherwise tie).
    newest = max((id_time(m.group("version")) or 0.0 for p in keys_dir.iterdir() if (m := _FILE.fullmatch(p.name))),
                 default=0.0)
    version = new_id("kek")
    while (id_time(version) or 0.0) <= newest:
        time.sleep(0.001)
        version = new_id("kek")
    fd = os.open(keys_dir / f"kek-{version}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode() + "\n")
    return version


class LocalKek:
    """AES-256-GCM key wrapping with the key files of ``keys_dir`` (one made if there is none)."""

    def __init__(self, keys_dir: Path, *, rescan_seconds: float = 30.0) -> None:
        self.keys_dir = keys_dir
        self.rescan_seconds = rescan_seconds
        self._lock = threading.Lock()
        self._ring: dict[str, AESGCM] = {}
        self._current = ""
        self._scanned_at = 0.0
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(keys_dir / ".kek.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first starts agree on one key
            if not any(_FILE.fullmatch(p.name) for p in keys_dir.iterdir()):
                add_version(keys_dir)
        self._scan()

    def _scan(self) -> None:
        ring: dict[str, AESGCM] = {}
        for path in sorted(self.keys_dir.iterdir()):
            match = _FILE.fullmatch(path.name)
            if match is None:
                continue
            try:
                key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise KekError(f"the key file {path.name} is not valid base64") from exc
            if len(key) != _KEY_BYTES:
                raise KekError(f"the key file {path.name} does not hold {_KEY_BYTES} bytes")
            ring[match.group("version")] = AESGCM(key)
        if not ring:
            raise KekError(f"no key-encryption key in {self.keys_dir}")
        with self._lock:
            self._ring = ring
            # The newest by the id's time: ids do not sort by time as text.
            self._current = max(ring, key=lambda version: (id_time(version) or 0.0, version))
            self._scanned_at = time.monotonic()

    def rotate(self) -> str:
        """A new key file, the new current version (other processes see it within ``rescan_seconds``)."""
        version = add_version(self.keys_dir)
        self._scan()
        return version

    def current_version(self) -> str:
        """The newest key file's version (re-read every ``rescan_seconds``)."""
        if time.monotonic() - self._scanned_at >= self.rescan_seconds:
            self._scan()
        return self._current

    def wrap(self, key: bytes, *, aad: bytes) -> Wrapped:
        """Encrypt ``key`` with the current key file."""
        version = self.current_version()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return Wrapped(nonce + self._ring[version].encrypt(nonce, key, aad + b"|" + version.encode()), version)

    def unwrap(self, ciphertext: bytes, *, kek_version: str, aad: bytes) -> bytes:
        """Decrypt with the key file ``kek_version``."""
        aead = self._ring.get(kek_version)
        if aead is None:
            self._scan()  # rotated by another process since we last looked
            aead = self._ring.get(kek_version)
        if aead is None:
            raise KekError(f"no key-encryption key of version {kek_version}")
        try:
            return aead.decrypt(ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:],
                                aad + b"|" + kek_version.encode())
        except InvalidTag as exc:
            raise KekError("the wrapped key does not authenticate (tampered, or another binding)") from exc
