"""The gcp mode's key-encryption key: a Cloud KMS symmetric key (``google-cloud-kms``).

Wrapping is ``Encrypt`` on the crypto key (KMS uses its primary version and names it in the
response: that name is the stored ``kek_version``); unwrapping is ``Decrypt`` on the crypto key
(KMS finds the version in the ciphertext itself). The associated data travels as KMS's
``additional_authenticated_data``. Rotating the key in KMS (a new primary version, by hand or on
its rotation schedule) rotates the KEK: older versions stay enabled and keep decrypting while
``SecretKeys.rewrap`` re-wraps every data key with the primary; disable an old version only when
no row names it any more. The primary is read with ``GetCryptoKey``, remembered ``primary_ttl``
seconds.

The client library is imported lazily, so a function that never touches a key does not load it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from shared.kernel.errors import Unavailable
from shared.secrets.ports import KekError, Wrapped


class CloudKmsKek:
    """Wraps data keys with the Cloud KMS key ``key_name`` (``projects/…/cryptoKeys/…``)."""

    def __init__(self, key_name: str, *, client: Any | None = None, primary_ttl: float = 60.0) -> None:
        if "/cryptoKeyVersions/" in key_name or "/cryptoKeys/" not in key_name:
            raise ValueError("the KMS key must be named projects/P/locations/L/keyRings/R/cryptoKeys/K")
        self.key_name = key_name
        self.primary_ttl = primary_ttl
        self._client = client
        self._lock = threading.Lock()
        self._primary: tuple[str, float] | None = None

    def _kms(self) -> Any:
        with self._lock:
            if self._client is None:
                # Heavy, so only when a key is needed; imported by its full name, as the shared type
                # checker may lack the package (the gcp extra brings it).
                import google.cloud.kms_v1  # noqa: PLC0415

                self._client = google.cloud.kms_v1.KeyManagementServiceClient()
            return self._client

    def current_version(self) -> str:
        """The key's primary version (``…/cryptoKeyVersions/N``)."""
        now = time.monotonic()
        cached = self._primary
        if cached is not None and cached[1] > now:
            return cached[0]
        key = self._kms().get_crypto_key(request={"name": self.key_name})
        primary = str(key.primary.name)
        if not primary:
            raise KekError(f"the KMS key {self.key_name} has no primary version")
        self._primary = (primary, now + self.primary_ttl)
        return primary

    def rotate(self) -> str:
        """A new key version in KMS, made the primary (``CreateCryptoKeyVersion``, then
        ``UpdateCryptoKeyPrimaryVersion``); the same as KMS's own rotation schedule does."""
        created = self._kms().create_crypto_key_version(request={"parent": self.key_name, "crypto_key_version": {}})
        version = str(created.name)
        self._kms().update_crypto_key_primary_version(
            request={"name": self.key_name, "crypto_key_version_id": version.rsplit("/", 1)[-1]})
        self._primary = (version, time.monotonic() + self.primary_ttl)
        return version

    def wrap(self, key: bytes, *, aad: bytes) -> Wrapped:
        """``Encrypt`` with the primary version."""
        from google.api_core import exceptions  # noqa: PLC0415

        try:
            response = self._kms().encrypt(request={"name": self.key_name, "plaintext": key,
                                                    "additional_authenticated_data": aad})
        except exceptions.GoogleAPICallError as exc:
            raise _kms_failure("wrap", exc) from exc
        return Wrapped(bytes(response.ciphertext), str(response.name))

    def unwrap(self, ciphertext: bytes, *, kek_version: str, aad: bytes) -> bytes:
        """``Decrypt`` on the key (KMS reads the version from the ciphertext)."""
        from google.api_core import exceptions  # noqa: PLC0415

        if not kek_version.startswith(self.key_name + "/"):
            raise KekError("the data key was wrapped by another KMS key")
        try:
            response = self._kms().decrypt(request={"name": self.key_name, "ciphertext": ciphertext,
                                                    "additional_authenticated_data": aad})
        except exceptions.GoogleAPICallError as exc:
            raise _kms_failure("unwrap", exc) from exc
        return bytes(response.plaintext)


def _kms_failure(action: str, exc: Exception) -> Exception:
    """KMS out of reach or overloaded is a 503 to retry; anything else (refused, not found, not
    allowed) is a key that cannot be used: ``KekError``."""
    from google.api_core import exceptions  # noqa: PLC0415

    transient = (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, exceptions.InternalServerError,
                 exceptions.TooManyRequests)
    if isinstance(exc, transient):
        return Unavailable(f"Cloud KMS could not {action} a data key now; retry shortly")
    return KekError(f"KMS refused to {action} a data key: {getattr(exc, 'message', exc)}")
