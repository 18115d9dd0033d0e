"""Envelope encryption of secrets at rest, with per-owner data keys (SPEC §5 "secrets").

Each owner (an org, or ``platform`` for what belongs to no org) has data keys (DEKs), one per
version, stored in ``secret_keys`` only wrapped by the key-encryption key (the ``KeyEncryptionKey``
port: a key file locally, Cloud KMS in gcp). A secret is sealed with AES-256-GCM under the owner's
newest DEK; the sealed value names the version, and the associated data binds the owner, the
purpose and the subject (a webhook id, …), so a ciphertext moved to another org, purpose or row
does not open.

Format of a sealed value::

    0x02 | DEK version (4 bytes, big-endian) | nonce (12 bytes) | ciphertext ‖ tag (16 bytes)

Rotation without downtime:

* **an owner's DEK** (``rotate``): a new version is inserted; new seals use it (other processes
  after at most ``cache_seconds``), older versions keep opening what they sealed, and the
  owners' contexts re-seal their rows in the background (``is_current`` says which).
* **the KEK** (a new key file, a new primary version in KMS): every version stays able to
  unwrap; ``rewrap`` (a scheduled job) re-wraps the DEKs still naming an older KEK version.

Values sealed by the platform key ring that came before (format ``0x01``, ``legacy``) still
open, under the context ``"<purpose>:<subject>"`` they were sealed with; every new seal is in
the format above, and the background re-seal moves old rows over.

Unwrapped DEKs are cached in memory for ``cache_seconds`` (default 5 minutes), so a secret's
open is one AES-GCM decryption, not a KMS call. Neither a key nor a secret is ever logged.
"""

from __future__ import annotations

import logging
import secrets as random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.audit import AuditLog
from shared.kernel.db.database import Database, UniqueViolation
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode
from shared.kernel.secret_box import SecretBox, SecretBoxError
from shared.secrets.models import KeyRotated, RewrapOut
from shared.secrets.ports import KekError, KeyEncryptionKey

_log = logging.getLogger(__name__)
_Q = Queries("shared.secrets")

PLATFORM = "platform"
SYSTEM_ACTOR = "system:secrets"
_FORMAT = b"\x02"
_LEGACY_FORMAT = b"\x01"
_VERSION_BYTES = 4
_HEADER_BYTES = 1 + _VERSION_BYTES
_NONCE_BYTES = 12
_KEY_BYTES = 32
_TAG_BYTES = 16


def _binding(owner: str, purpose: str, subject: str) -> bytes:
    # Length-prefixed, so no choice of subject can make two different triples look alike.
    return f"{len(owner)}:{owner}|{len(purpose)}:{purpose}|{subject}".encode()


def _dek_aad(owner: str, version: int) -> bytes:
    # Binds a wrapped DEK to its row: copied to another owner or version, it no longer unwraps.
    return f"dek|{len(owner)}:{owner}|{version}".encode()


def key_version_of(sealed: bytes) -> int | None:
    """The DEK version a sealed value names; None for the legacy format (or a malformed value)."""
    if len(sealed) < _HEADER_BYTES or sealed[:1] != _FORMAT:
        return None
    return int.from_bytes(sealed[1:_HEADER_BYTES], "big")


@dataclass
class _Reads:
    last_audited: float
    unaudited: int


class SecretKeys:
    """Seals and opens an owner's secrets; rotates its data keys; re-wraps them under a new KEK."""

    def __init__(self, db: Database, audit: AuditLog, kek: KeyEncryptionKey, *, legacy: SecretBox | None = None,
                 cache_seconds: float = 300.0, read_audit_seconds: float = 3600.0, max_cached: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.audit = audit
        self.kek = kek
        self.legacy = legacy
        self.cache_seconds = cache_seconds
        self.read_audit_seconds = read_audit_seconds
        self.max_cached = max_cached
        self._clock = clock
        self._lock = threading.Lock()
        self._deks: dict[tuple[str, int], tuple[AESGCM, float]] = {}
        self._current: dict[str, tuple[int, float]] = {}
        self._reads: dict[tuple[str, str, str], _Reads] = {}

    # -- sealing ---------------------------------------------------------------------------------
    def seal(self, owner: str, purpose: str, subject: str, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` under ``owner``'s newest DEK, bound to (owner, purpose, subject)."""
        version = self._current_version(owner)
        aead = self._dek(owner, version)
        header = _FORMAT + version.to_bytes(_VERSION_BYTES, "big")
        nonce = random.token_bytes(_NONCE_BYTES)
        return header + nonce + aead.encrypt(nonce, plaintext, header + _binding(owner, purpose, subject))

    def open(self, owner: str, purpose: str, subject: str, sealed: bytes, *, reader: str | None = None) -> bytes:
        """Decrypt what ``seal`` made for the same (owner, purpose, subject), or a legacy value.

        ``reader`` (an actor) marks the open as a secret read to audit in the owner's log (at most
        one entry per secret and ``read_audit_seconds`` per process, counting the reads in
        between); without it the open is internal (a re-seal, a replay to the same caller).
        Raises ``SecretBoxError`` for anything that does not open.
        """
        sealed = bytes(sealed)
        if sealed[:1] == _LEGACY_FORMAT:
            if self.legacy is None:
                raise SecretBoxError("the sealed value is in the legacy format and no legacy key ring is configured")
            plaintext = self.legacy.unseal(sealed, context=f"{purpose}:{subject}")
            version = 0
        else:
            version_or_none = key_version_of(sealed)
            if version_or_none is None or len(sealed) < _HEADER_BYTES + _NONCE_BYTES + _TAG_BYTES:
                raise SecretBoxError("the sealed value is malformed")
            version = version_or_none
            aead = self._dek(owner, version)
            header = sealed[:_HEADER_BYTES]
            nonce = sealed[_HEADER_BYTES:_HEADER_BYTES + _NONCE_BYTES]
            try:
                plaintext = aead.decrypt(nonce, sealed[_HEADER_BYTES + _NONCE_BYTES:],
                                         header + _binding(owner, purpose, subject))
            except InvalidTag as exc:
                raise SecretBoxError("the sealed value does not authenticate (tampered, or another binding)") from exc
        if reader is not None and owner != PLATFORM:
            self._audit_read(owner, purpose, subject, version, reader)
        return plaintext

    def is_current(self, owner: str, sealed: bytes) -> bool:
        """Whether ``sealed`` was made with ``owner``'s newest DEK (False: re-seal it)."""
        version = key_version_of(bytes(sealed))
        return version is not None and version == self._current_version(owner)

    def reseal(self, owner: str, purpose: str, subject: str, sealed: bytes) -> bytes | None:
        """The value sealed again under the newest DEK, or None when it already is (not audited:
        the secret does not leave the platform)."""
        if self.is_current(owner, sealed):
            return None
        return self.seal(owner, purpose, subject, self.open(owner, purpose, subject, sealed))

    # -- rotation --------------------------------------------------------------------------------
    def rotate(self, owner: str, *, actor: str) -> KeyRotated:
        """A new DEK for ``owner``; new seals use it, older versions keep opening (audited)."""
        try:
            with self.db.transaction() as tx:
                row = tx.fetch_one(_Q.current_key, owner)
                version = (int(row["version"]) if row else 0) + 1
                wrapped = self.kek.wrap(random.token_bytes(_KEY_BYTES), aad=_dek_aad(owner, version))
                tx.execute(_Q.insert_key, owner, version, wrapped.ciphertext, wrapped.kek_version)
                if owner != PLATFORM:
                    self.audit.append(tx, org_id=owner, actor=actor, action="secret.key_rotated",
                                      target=f"{owner}/keys/{version}",
                                      details={"version": version, "kek_version": wrapped.kek_version})
        except UniqueViolation as exc:
            raise Conflict("another rotation of this key is in progress", code=ErrorCode.CONFLICT) from exc
        with self._lock:
            self._current[owner] = (version, self._clock() + self.cache_seconds)
        _log.info("data key of %s rotated to version %s", owner, version,
                  extra={"fields": {"owner": owner, "version": version}})
        return KeyRotated(owner=owner, version=version)

    def rotate_kek(self) -> RewrapOut:
        """Rotate the key-encryption key and re-wrap every data key with the new version.

        Nothing stops meanwhile: until its row is re-wrapped a data key unwraps with the version
        that wrapped it (and the scheduled ``rewrap`` finishes what an interrupted call left).
        """
        version = self.kek.rotate()
        _log.info("key-encryption key rotated to %s", version, extra={"fields": {"kek_version": version}})
        return self.rewrap(limit=2**31 - 1)

    def rewrap(self, limit: int = 100) -> RewrapOut:
        """Re-wrap up to ``limit`` DEKs that an older KEK version wrapped with the current one.

        A key that does not unwrap (a KEK version the operator already retired) is logged and
        skipped, never blocking the others: the pass walks the table in (owner, version) order.
        """
        current = self.kek.current_version()
        done, after = 0, ("", 0)
        while done < limit:
            with self.db.transaction() as tx:
                rows = tx.fetch_all(_Q.keys_to_rewrap, current, after[0], after[0], after[1], min(limit - done, 100))
                for row in rows:
                    owner, version = str(row["owner"]), int(row["version"])
                    aad = _dek_aad(owner, version)
                    try:
                        key = self.kek.unwrap(bytes(row["wrapped_key"]), kek_version=str(row["kek_version"]), aad=aad)
                    except KekError as exc:
                        _log.error("the data key %s/%s cannot be re-wrapped: %s", owner, version, exc,
                                   extra={"fields": {"owner": owner, "version": version}})
                        continue
                    wrapped = self.kek.wrap(key, aad=aad)
                    done += tx.execute(_Q.rewrap_key, wrapped.ciphertext, wrapped.kek_version, owner, version)
            if not rows:
                break
            after = (str(rows[-1]["owner"]), int(rows[-1]["version"]))
        if done:
            _log.info("re-wrapped %s data keys with KEK version %s", done, current,
                      extra={"fields": {"rewrapped": done, "kek_version": current}})
        return RewrapOut(rewrapped=done, kek_version=current)

    # -- the keys, cached ----------------------------------------------------------------------------
    def _current_version(self, owner: str) -> int:
        now = self._clock()
        with self._lock:
            cached = self._current.get(owner)
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.current_key, owner)
        if row is None:
            wrapped = self.kek.wrap(random.token_bytes(_KEY_BYTES), aad=_dek_aad(owner, 1))
            with self.db.transaction() as tx:
                tx.execute(_Q.insert_first_key, owner, wrapped.ciphertext, wrapped.kek_version)
                row = tx.fetch_one(_Q.current_key, owner)
            assert row is not None
        version = int(row["version"])
        self._remember_dek(owner, version, bytes(row["wrapped_key"]), str(row["kek_version"]), now)
        with self._lock:
            self._current[owner] = (version, now + self.cache_seconds)
        return version

    def _dek(self, owner: str, version: int) -> AESGCM:
        now = self._clock()
        with self._lock:
            cached = self._deks.get((owner, version))
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.key_version, owner, version)
        if row is None:
            raise SecretBoxError("the sealed value names a data key this owner does not have")
        return self._remember_dek(owner, version, bytes(row["wrapped_key"]), str(row["kek_version"]), now)

    def _remember_dek(self, owner: str, version: int, wrapped: bytes, kek_version: str, now: float) -> AESGCM:
        try:
            aead = AESGCM(self.kek.unwrap(wrapped, kek_version=kek_version, aad=_dek_aad(owner, version)))
        except KekError as exc:
            raise SecretBoxError(f"the data key cannot be unwrapped: {exc}") from exc
        with self._lock:
            if len(self._deks) >= self.max_cached:
                self._deks = {k: v for k, v in self._deks.items() if v[1] > now}
                while len(self._deks) >= self.max_cached:
                    self._deks.pop(next(iter(self._deks)))
            self._deks[(owner, version)] = (aead, now + self.cache_seconds)
        return aead

    # -- auditing reads --------------------------------------------------------------------------------
    def _audit_read(self, owner: str, purpose: str, subject: str, version: int, reader: str) -> None:
        now = self._clock()
        key = (owner, purpose, subject)
        with self._lock:
            reads = self._reads.get(key)
            if reads is not None and now - reads.last_audited < self.read_audit_seconds:
                reads.unaudited += 1
                return
            count = 1 + (reads.unaudited if reads else 0)
            if len(self._reads) >= self.max_cached:
                self._reads.clear()
            self._reads[key] = _Reads(last_audited=now, unaudited=0)
        try:
            with self.db.transaction() as tx:
                self.audit.append(tx, org_id=owner, actor=reader, action="secret.read", target=subject,
                                  details={"purpose": purpose, "key_version": version, "reads": count})
        except BaseException:
            with self._lock:  # not recorded: the next read tries again
                self._reads.pop(key, None)
            raise
