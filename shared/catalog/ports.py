"""What the catalog needs from contexts above it, as small interfaces the composition root fills."""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from shared.kernel.db.statements import Statements
from shared.kernel.errors import NotFound


class InstallHistory(Protocol):
    """Which orgs have used which agents (the deployments context owns the answer)."""

    def has_installed(self, tx: Statements, org_id: str, agent_id: str) -> bool:
        """Has ``org_id`` ever installed the agent, in the caller's transaction? Uninstalled
        deployments count (the org used the agent and may say why it left); failed ones do not
        (it never ran)."""
        ...


class ArtifactNotFound(NotFound):
    """No artifact with that digest in the store."""


class ArtifactStore(Protocol):
    """Agent packages' bytes, content-addressed by their SHA-256 (issue 14).

    Adapters: files under the data directory (local mode), a Cloud Storage bucket (gcp). Writing
    the same bytes twice is harmless and stores them once; an artifact is never changed nor
    deleted by the platform.
    """

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent); its SHA-256, lowercase hex."""
        ...

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; :class:`ArtifactNotFound` if none."""
        ...

    def exists(self, sha256: str) -> bool:
        """Is there an artifact with this digest?"""
        ...


_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def artifact_digest(data: bytes) -> str:
    """The digest an artifact is stored under: SHA-256, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def checked_digest(sha256: str) -> str:
    """``sha256`` when it is 64 lowercase hex digits (it becomes part of a path or an object name);
    :class:`ArtifactNotFound` otherwise, as no artifact can have that name."""
    if not _HEX_DIGEST.fullmatch(sha256):
        raise ArtifactNotFound("no package with that digest")
    return sha256
