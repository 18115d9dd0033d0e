"""The secrets context's public API: envelope encryption with per-org data keys (SPEC §5)."""

from shared.secrets.models import KeyRotated, RewrapOut
from shared.secrets.ports import KekError, KeyEncryptionKey, Wrapped
from shared.secrets.service import PLATFORM, SecretKeys, key_version_of

__all__ = ["PLATFORM", "KekError", "KeyEncryptionKey", "KeyRotated", "RewrapOut", "SecretKeys", "Wrapped",
           "key_version_of"]
