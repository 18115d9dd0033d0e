"""The artifact store port (issue 14): one suite that both adapters pass.

The files adapter runs on a temporary directory; the Cloud Storage adapter runs
``google-cloud-storage``'s real client (its public API, anonymous credentials) against a small
recording HTTP server that answers as the JSON API does: a multipart upload honouring
``ifGenerationMatch=0`` (412 when the object exists), media downloads and metadata reads (404
when it does not).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from support.http import Recorded, RecordingServer, Reply

from shared.catalog import ArtifactNotFound, ArtifactStore
from shared.catalog.adapters.file_artifacts import FileArtifactStore
from shared.catalog.adapters.gcs_artifacts import OBJECT_PREFIX, GcsArtifactStore

BUCKET = "acme-agent-packages"


class FakeCloudStorage:
    """Objects of one bucket in memory, served over the JSON API's routes the client uses."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.server = RecordingServer(self._answer)

    @staticmethod
    def _error(status: int, message: str) -> Reply:
        return Reply(status, {"error": {"code": status, "message": message, "errors": [{"message": message}]}})

    def _resource(self, name: str) -> dict[str, Any]:
        return {"kind": "storage#object", "bucket": BUCKET, "name": name, "generation": "1",
                "size": str(len(self.objects[name]))}

    def _answer(self, request: Recorded) -> Reply:
        path, query = request.path, request.query
        with self._lock:
            if request.method == "POST" and path == f"/upload/storage/v1/b/{BUCKET}/o":
                return self._upload(request, query)
            for prefix in (f"/download/storage/v1/b/{BUCKET}/o/", f"/storage/v1/b/{BUCKET}/o/"):
                if request.method == "GET" and path.startswith(prefix):
                    name = unquote(path[len(prefix):])
                    if name not in self.objects:
                        return self._error(404, f"No such object: {BUCKET}/{name}")
                    if query.get("alt") == "media":
                        return Reply(200, self.objects[name], {"Content-Type": "application/octet-stream"})
                    return Reply(200, self._resource(name))
        return self._error(400, f"unscripted {request.method} {request.target}")

    def _upload(self, request: Recorded, query: dict[str, str]) -> Reply:
        # multipart/related: a JSON part (the object's metadata), then the media part.
        boundary = request.headers["content-type"].split("boundary=")[1].strip('"').encode()
        parts = [p for p in request.body.split(b"--" + boundary) if p.strip(b"\r\n-")]
        metadata = json.loads(parts[0].split(b"\r\n\r\n", 1)[1])
        media = parts[1].split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
        name = metadata["name"]
        if query.get("ifGenerationMatch") == "0" and name in self.objects:
            return self._error(412, "At least one of the pre-conditions you specified did not hold.")
        self.objects[name] = media
        return Reply(200, self._resource(name))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_gcs() -> Iterator[FakeCloudStorage]:
    fake = FakeCloudStorage()
    yield fake
    fake.close()


def gcs_store(fake: FakeCloudStorage) -> GcsArtifactStore:
    client = storage.Client(project="acme-prod", credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                            client_options={"api_endpoint": fake.server.url})
    return GcsArtifactStore(BUCKET, client=client)


@pytest.fixture(params=["files", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "files":
        return FileArtifactStore(tmp_path / "artifacts")
    return gcs_store(request.getfixturevalue("fake_gcs"))


def test_put_returns_the_sha256_and_get_returns_the_bytes(store: ArtifactStore):
    data = b"\x1f\x8b" + bytes(range(256)) * 40
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.exists(digest)
    assert store.get(digest) == data


def test_put_is_idempotent(store: ArtifactStore):
    data = b"the same bytes twice"
    assert store.put(data) == store.put(data)
    assert store.get(hashlib.sha256(data).hexdigest()) == data


@pytest.mark.parametrize("name", ["0" * 64, "../../etc/passwd", "A" * 64, "abc", ""])
def test_unknown_or_malformed_digests_are_not_found(store: ArtifactStore, name: str):
    assert not store.exists(name)
    with pytest.raises(ArtifactNotFound):
        store.get(name)


def test_files_are_content_addressed_and_written_whole(tmp_path: Path):
    store = FileArtifactStore(tmp_path)
    digest = store.put(b"package bytes")
    path = tmp_path / "sha256" / digest[:2] / digest
    assert path.read_bytes() == b"package bytes"
    assert [p.name for p in path.parent.iterdir()] == [digest]  # no temporary file left behind
    path.chmod(0o644)
    path.write_bytes(b"damaged")
    with pytest.raises(ArtifactNotFound):
        store.get(digest)


def test_cloud_storage_objects_are_created_once_under_their_digest(fake_gcs: FakeCloudStorage):
    store = gcs_store(fake_gcs)
    digest = store.put(b"package bytes")
    assert fake_gcs.objects == {OBJECT_PREFIX + digest: b"package bytes"}
    store.put(b"package bytes")  # 412 from Cloud Storage: already there, not an error
    uploads = [r for r in fake_gcs.server.received() if r.method == "POST"]
    assert len(uploads) == 2 and all(r.query["ifGenerationMatch"] == "0" for r in uploads)
