"""Agent packages in a Cloud Storage bucket (gcp mode): objects ``packages/sha256/<hex>``.

Objects are created once (``if_generation_match=0``): a second upload of the same digest gets
412 from Cloud Storage, which means the bytes are already there. The bucket has versioning off
and uniform access (terraform/storage.tf); the functions' account is its object admin, the
data planes never read it (they fetch packages from the control plane).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from google.api_core import exceptions as google_errors
from google.cloud import storage  # type: ignore[attr-defined]  # the package ships no type hints

from shared.catalog.ports import ArtifactNotFound, artifact_digest, checked_digest

OBJECT_PREFIX = "packages/sha256/"


class GcsArtifactStore:
    """``ArtifactStore`` on Cloud Storage through ``google-cloud-storage``'s public API."""

    def __init__(self, bucket: str, *, project: str | None = None, client: storage.Client | None = None) -> None:
        self.bucket_name = bucket
        self._project = project
        self._client = client
        self._bucket: Any = None
        self._lock = threading.Lock()

    def _blob(self, sha256: str) -> Any:
        name = OBJECT_PREFIX + checked_digest(sha256)
        if self._bucket is None:
            with self._lock:  # the client finds its credentials on first use, not at startup
                if self._bucket is None:
                    client = self._client or storage.Client(project=self._project)
                    self._bucket = client.bucket(self.bucket_name)
        return self._bucket.blob(name)

    def put(self, data: bytes) -> str:
        digest = artifact_digest(data)
        blob = self._blob(digest)
        # 412 when the object exists: its name is the content's digest, so these bytes are there.
        with contextlib.suppress(google_errors.PreconditionFailed):
            blob.upload_from_string(data, content_type="application/octet-stream", if_generation_match=0)
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            data: bytes = self._blob(sha256).download_as_bytes()
        except google_errors.NotFound:
            raise ArtifactNotFound("no package with that digest") from None
        if artifact_digest(data) != sha256:
            raise ArtifactNotFound(f"the stored package {sha256} is damaged")
        return data

    def exists(self, sha256: str) -> bool:
        try:
            return bool(self._blob(sha256).exists())
        except ArtifactNotFound:
            return False
