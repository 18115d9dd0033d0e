"""Agent packages as files under the data directory (local mode): ``<root>/sha256/ab/<hex>``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from shared.catalog.ports import ArtifactNotFound, artifact_digest, checked_digest


class FileArtifactStore:
    """``ArtifactStore`` on the local file system. A write goes to a temporary file in the target's
    folder and is renamed into place (``os.replace``), so a reader never sees half an artifact and
    two writers of the same bytes both succeed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        digest = checked_digest(sha256)
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = artifact_digest(data)
        path = self._path(digest)
        if path.is_file():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{digest[:8]}-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o444)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            data = self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound("no package with that digest") from None
        if artifact_digest(data) != sha256:  # a damaged file is not that artifact
            raise ArtifactNotFound(f"the stored package {sha256} is damaged")
        return data

    def exists(self, sha256: str) -> bool:
        try:
            return self._path(sha256).is_file()
        except ArtifactNotFound:
            return False
