"""gcp mode's sign-in (issue 19 item 3): the OAuth 2.0 device authorization grant (RFC 8628) and
the refresh at the OIDC issuer, against a small issuer served over real HTTP on the loopback."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
from support.http import Recorded, RecordingServer, Reply

from functions.cli_api import DEVICE_GRANT, Api, ApiError
from functions.cli_config import ClientConfig


class Issuer:
    """Discovery, device authorization and a token endpoint that answers ``authorization_pending``
    twice before the user has approved; served on the suite's ``RecordingServer``."""

    def __init__(self) -> None:
        self.polls = 0
        self.server = RecordingServer(self.answer)
        self.url = self.server.url

    def forms(self) -> list[dict[str, str]]:
        """What was posted, in order, each with its path."""
        return [{"path": r.path, **dict(urllib.parse.parse_qsl(r.body.decode()))}
                for r in self.server.received() if r.method == "POST"]

    def answer(self, request: Recorded) -> Reply:
        if request.method == "GET":
            return Reply(200, {"issuer": self.url, "device_authorization_endpoint": f"{self.url}/device",
                               "token_endpoint": f"{self.url}/token"})
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        if request.path == "/device":
            if form.get("client_id") != "cli-client":
                return Reply(400, {"error": "invalid_client", "error_description": "unknown client"})
            return Reply(200, {"device_code": "dev-123", "user_code": "ABCD-EFGH", "interval": 0, "expires_in": 60,
                               "verification_uri": "https://issuer.example/device"})
        if form.get("grant_type") == DEVICE_GRANT:
            self.polls += 1
            if self.polls < 3:
                return Reply(400, {"error": "authorization_pending"})
            return Reply(200, {"access_token": "at-1", "id_token": "id-1", "refresh_token": "rt-1",
                               "expires_in": 3600})
        if form.get("grant_type") == "refresh_token" and form.get("refresh_token") == "rt-1":
            return Reply(200, {"access_token": "at-2", "id_token": "id-2", "expires_in": 3600})
        return Reply(400, {"error": "invalid_grant", "error_description": "the refresh token is not valid"})


@pytest.fixture
def served() -> Iterator[Issuer]:
    issuer = Issuer()
    with issuer.server:
        yield issuer


@pytest.fixture
def issuer(served: Issuer) -> str:
    return served.url


def test_device_login_then_refresh_at_the_issuer(served: Issuer, issuer: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MARKETPLACE_CONFIG_DIR", str(tmp_path))
    config = ClientConfig(url="http://127.0.0.1:9", mode="gcp")
    api = Api(config)
    shown: list[tuple[str, str]] = []
    api.device_login(issuer, "cli-client", "openid email offline_access", lambda uri, code: shown.append((uri, code)))
    assert shown == [("https://issuer.example/device", "ABCD-EFGH")]
    assert served.polls == 3  # polled while pending
    stored = ClientConfig.load()
    assert stored.access_token == "id-1" and stored.refresh_token == "rt-1"  # the ID token is the bearer token
    assert stored.oidc == {"issuer": issuer, "client_id": "cli-client", "token_endpoint": f"{issuer}/token"}
    api.refresh()
    refreshed = ClientConfig.load()
    assert refreshed.access_token == "id-2" and refreshed.refresh_token == "rt-1"
    assert served.forms()[-1] == {"path": "/token", "grant_type": "refresh_token", "refresh_token": "rt-1",
                                "client_id": "cli-client"}


def test_an_unknown_client_and_a_dead_refresh_token_are_plain_errors(issuer: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MARKETPLACE_CONFIG_DIR", str(tmp_path))
    api = Api(ClientConfig(mode="gcp"))
    with pytest.raises(ApiError) as refused:
        api.device_login(issuer, "someone-else", "openid", lambda *_: None)
    assert refused.value.message == "unknown client" and "--client-id" in refused.value.hint
    api.config.oidc = {"issuer": issuer, "client_id": "cli-client", "token_endpoint": f"{issuer}/token"}
    api.config.refresh_token = "rt-stolen"
    with pytest.raises(ApiError) as dead:
        api.refresh()
    assert dead.value.message == "the refresh token is not valid" and "marketplace login" in dead.value.hint


@pytest.mark.parametrize(("discovery", "grant"), [
    ({"issuer": "x"}, None),  # no device endpoint
    (None, {"user_code": "ABCD", "verification_uri": "https://issuer.example/device"}),  # no device_code
    (None, {"device_code": "d", "verification_uri": "https://issuer.example/device"}),  # no user_code
    (None, {"device_code": "d", "user_code": "ABCD"}),  # nowhere to go
    (None, {"device_code": "d", "user_code": "ABCD", "verification_uri": "u", "interval": "soon"}),
    (None, {"device_code": "d", "user_code": "ABCD", "verification_uri": "u", "expires_in": -5}),
    (None, ["not", "an", "object"]),
])
def test_an_issuer_answer_missing_what_the_grant_needs_is_a_plain_error(discovery, grant, tmp_path,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("MARKETPLACE_CONFIG_DIR", str(tmp_path))

    def answer(request: Recorded) -> Reply:
        if request.method == "GET":
            return Reply(200, discovery or {"device_authorization_endpoint": f"{server.url}/device",
                                            "token_endpoint": f"{server.url}/token"})
        return Reply(200, grant)

    server = RecordingServer(answer)
    with server:
        api = Api(ClientConfig(mode="gcp"))
        with pytest.raises(ApiError) as refused:
            api.device_login(server.url, "cli-client", "openid", lambda *_: pytest.fail("nothing to announce"))
    assert refused.value.code == "oidc_unavailable" and "--issuer" in refused.value.hint
    assert api.config.oidc is None or api.config.oidc == {}
