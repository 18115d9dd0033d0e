"""CloudKmsKek against the real Cloud KMS v1 client (``google-cloud-kms``, the ``gcp`` extra).

No KMS emulator exists, so the client runs its REST transport against the suite's recording
server, which answers as Cloud KMS does; every test asserts the exact requests the client sent.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms_v1  # the gcp extra: missing, it fails (no silent skip)
from support.http import Recorded, RecordingServer, Reply

from shared.secrets import KekError
from shared.secrets.adapters.cloudkms_kek import CloudKmsKek

KEY = "projects/acme-prod/locations/europe-west1/keyRings/marketplace/cryptoKeys/data-keys"
V1, V2 = f"{KEY}/cryptoKeyVersions/1", f"{KEY}/cryptoKeyVersions/2"
DEK = bytes(range(32))
AAD = b"dek|7:org_abc|1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeKms:
    """Answers per (method, path) from a script (the last answer repeats); records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.lock = threading.Lock()
        self.server = RecordingServer(self.answer)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def answer(self, request: Recorded) -> Reply:
        with self.lock:
            queue = self.routes.get((request.method, request.path))
            if not queue:
                return Reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                             "message": f"unscripted {request.method} {request.path}"}})
            return queue.pop(0) if len(queue) > 1 else queue[0]

    @property
    def requests(self) -> list[Recorded]:
        return self.server.received()


@pytest.fixture
def kms() -> Iterator[FakeKms]:
    fake = FakeKms()
    yield fake
    fake.server.close()


def make_kek(kms: FakeKms, **options: Any) -> CloudKmsKek:
    client = kms_v1.KeyManagementServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                               client_options={"api_endpoint": kms.server.url})
    return CloudKmsKek(KEY, client=client, **options)


def test_wrap_encrypts_with_the_key_and_records_the_version_kms_used(kms: FakeKms) -> None:
    kms.on("POST", f"/v1/{KEY}:encrypt", Reply(200, {"name": V1, "ciphertext": b64(b"wrapped-by-v1")}))
    wrapped = make_kek(kms).wrap(DEK, aad=AAD)
    assert (wrapped.ciphertext, wrapped.kek_version) == (b"wrapped-by-v1", V1)
    [request] = kms.requests
    assert (request.method, request.path) == ("POST", f"/v1/{KEY}:encrypt")
    assert request.json() == {"plaintext": b64(DEK), "additionalAuthenticatedData": b64(AAD)}


def test_unwrap_decrypts_on_the_key_with_the_same_associated_data(kms: FakeKms) -> None:
    kms.on("POST", f"/v1/{KEY}:decrypt", Reply(200, {"plaintext": b64(DEK)}))
    assert make_kek(kms).unwrap(b"wrapped-by-v1", kek_version=V1, aad=AAD) == DEK
    [request] = kms.requests
    assert (request.method, request.path) == ("POST", f"/v1/{KEY}:decrypt")
    assert request.json() == {"ciphertext": b64(b"wrapped-by-v1"), "additionalAuthenticatedData": b64(AAD)}


def test_the_current_version_is_the_primary_read_once_per_ttl(kms: FakeKms) -> None:
    kms.on("GET", f"/v1/{KEY}", Reply(200, {"name": KEY, "primary": {"name": V2, "state": "ENABLED"}}))
    kek = make_kek(kms, primary_ttl=60)
    assert kek.current_version() == V2
    assert kek.current_version() == V2
    [request] = kms.requests
    assert (request.method, request.path) == ("GET", f"/v1/{KEY}")


def test_kms_refusals_become_kek_errors_and_other_keys_are_refused_without_a_call(kms: FakeKms) -> None:
    kms.on("POST", f"/v1/{KEY}:decrypt", Reply(400, {"error": {
        "code": 400, "status": "INVALID_ARGUMENT", "message": "Decryption failed: the ciphertext is invalid."}}))
    kek = make_kek(kms)
    with pytest.raises(KekError, match="refused to unwrap"):
        kek.unwrap(b"tampered", kek_version=V1, aad=AAD)
    before = len(kms.requests)
    with pytest.raises(KekError, match="another KMS key"):
        kek.unwrap(b"x", kek_version="projects/p/locations/l/keyRings/r/cryptoKeys/other/cryptoKeyVersions/1",
                   aad=AAD)
    assert len(kms.requests) == before


def test_a_key_version_name_is_not_a_key_name() -> None:
    with pytest.raises(ValueError, match="cryptoKeys"):
        CloudKmsKek(V1)


def test_rotate_creates_a_version_and_makes_it_the_primary(kms: FakeKms) -> None:
    kms.on("POST", f"/v1/{KEY}/cryptoKeyVersions", Reply(200, {"name": V2, "state": "ENABLED"}))
    kms.on("POST", f"/v1/{KEY}:updatePrimaryVersion", Reply(200, {"name": KEY, "primary": {"name": V2}}))
    kek = make_kek(kms)
    assert kek.rotate() == V2
    assert kek.current_version() == V2  # remembered: no GetCryptoKey
    create, update = kms.requests
    assert (create.method, create.path, create.json()) == ("POST", f"/v1/{KEY}/cryptoKeyVersions", {})
    assert (update.method, update.path, update.json()) == ("POST", f"/v1/{KEY}:updatePrimaryVersion",
                                                          {"cryptoKeyVersionId": "2"})
