"""gcp mode's sign-in (issue 19 item 3): the OAuth 2.0 device authorization grant (RFC 8628) and
the refresh at the OIDC issuer, against a small issuer served over real HTTP on the loopback."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from functions.cli_api import DEVICE_GRANT, Api, ApiError
from functions.cli_config import ClientConfig


class Issuer(BaseHTTPRequestHandler):
    """Discovery, device authorization and a token endpoint that answers ``authorization_pending``
    twice before the user has approved."""

    polls = 0
    forms: list[dict[str, str]] = []  # the test's record of what was sent

    def log_message(self, *_args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._reply(200, {"issuer": base, "device_authorization_endpoint": f"{base}/device",
                          "token_endpoint": f"{base}/token"})

    def do_POST(self) -> None:
        form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        Issuer.forms.append({"path": self.path, **form})
        if self.path == "/device":
            if form.get("client_id") != "cli-client":
                self._reply(400, {"error": "invalid_client", "error_description": "unknown client"})
                return
            self._reply(200, {"device_code": "dev-123", "user_code": "ABCD-EFGH", "interval": 0, "expires_in": 60,
                              "verification_uri": "https://issuer.example/device"})
        elif form.get("grant_type") == DEVICE_GRANT:
            Issuer.polls += 1
            if Issuer.polls < 3:
                self._reply(400, {"error": "authorization_pending"})
            else:
                self._reply(200, {"access_token": "at-1", "id_token": "id-1", "refresh_token": "rt-1",
                                  "expires_in": 3600})
        elif form.get("grant_type") == "refresh_token" and form.get("refresh_token") == "rt-1":
            self._reply(200, {"access_token": "at-2", "id_token": "id-2", "expires_in": 3600})
        else:
            self._reply(400, {"error": "invalid_grant", "error_description": "the refresh token is not valid"})


@pytest.fixture
def issuer() -> Iterator[str]:
    Issuer.polls, Issuer.forms = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Issuer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_device_login_then_refresh_at_the_issuer(issuer: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MARKETPLACE_CONFIG_DIR", str(tmp_path))
    config = ClientConfig(url="http://127.0.0.1:9", mode="gcp")
    api = Api(config)
    shown: list[tuple[str, str]] = []
    api.device_login(issuer, "cli-client", "openid email offline_access", lambda uri, code: shown.append((uri, code)))
    assert shown == [("https://issuer.example/device", "ABCD-EFGH")]
    assert Issuer.polls == 3  # polled while pending
    stored = ClientConfig.load()
    assert stored.access_token == "id-1" and stored.refresh_token == "rt-1"  # the ID token is the bearer token
    assert stored.oidc == {"issuer": issuer, "client_id": "cli-client", "token_endpoint": f"{issuer}/token"}
    api.refresh()
    refreshed = ClientConfig.load()
    assert refreshed.access_token == "id-2" and refreshed.refresh_token == "rt-1"
    assert Issuer.forms[-1] == {"path": "/token", "grant_type": "refresh_token", "refresh_token": "rt-1",
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
