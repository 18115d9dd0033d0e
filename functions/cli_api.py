"""The client CLI's HTTP client: the stored credentials, refreshed before they expire (and once
more when the API answers ``token_expired``), and every failure turned into an :class:`ApiError`
carrying the API's own message and a hint of what to do next."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationError

from functions.cli_config import ClientConfig
from functions.cli_errors import CliCode, Code, OAuthCode, api_code, oauth_code, status_code
from shared.kernel.errors import ErrorCode

#: Refresh an access token this many seconds before it expires.
REFRESH_MARGIN_SECONDS = 30
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class ApiError(Exception):
    """A failed call: the HTTP status (0 when the API was not reached), the error's code (a member
    of one of the catalogues of ``functions/cli_errors.py``, never a free string) and message, its
    details, and a hint for the person at the terminal."""

    status: int
    code: Code
    message: str
    hint: str = ""
    details: list[Any] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, Any]:
        """The error as ``--json`` prints it."""
        return {"error": {"status": self.status, "code": str(self.code), "message": self.message,
                          "details": self.details, "hint": self.hint}}


#: The hint of an API error, by its code (docs/CLI.md lists them); the CLI's own errors carry theirs.
_HINTS: dict[Code, str] = {
    ErrorCode.TOKEN_EXPIRED: "sign in again: marketplace login",
    ErrorCode.INVALID_TOKEN: "sign in again: marketplace login",
    ErrorCode.UNAUTHORIZED: "sign in first: marketplace login",
    ErrorCode.INVALID_GRANT: "sign in again: marketplace login",
    ErrorCode.REFRESH_TOKEN_REUSED: "sign in again: marketplace login",
    ErrorCode.FORBIDDEN: "your role in this organisation does not allow it (marketplace orgs list shows your roles)",
    ErrorCode.NOT_FOUND: "check the name or id (marketplace agents search, deployments list and runs list show them)",
    ErrorCode.DEPLOYMENT_NOT_READY: "wait until the deployment is ready: marketplace deployments list",
    ErrorCode.VALIDATION_FAILED: "fix the fields named above",
    ErrorCode.RATE_LIMITED: "wait a moment and try again",
    ErrorCode.DATABASE_UNAVAILABLE: "the platform's database is down: marketplace doctor",
}
#: The hint of a platform failure (a 5xx) whose code has none of its own.
SERVER_FAILURE_HINT = "the platform failed; its log says why (marketplace doctor shows what is running)"


def hint_for(status: int, code: Code | None) -> str:
    """What to do about an error, by its code (or status)."""
    if code is not None and code in _HINTS:
        return _HINTS[code]
    if status >= 500:
        return SERVER_FAILURE_HINT
    return ""


def _error_from(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = api_code(err.get("code"), resp.status_code)
        message = str(err.get("message") or resp.reason_phrase)
        details = err.get("details") or []
        return ApiError(resp.status_code, code, message, hint_for(resp.status_code, code),
                        details if isinstance(details, list) else [details])
    text = resp.text.strip()[:300] or resp.reason_phrase
    return ApiError(resp.status_code, status_code(resp.status_code), f"HTTP {resp.status_code}: {text}",
                    hint_for(resp.status_code, None))


class Api:
    """Calls the platform as the signed-in user (``auth=False`` for public calls)."""

    def __init__(self, config: ClientConfig, url: str | None = None) -> None:
        self.config = config
        self.url = (url or config.url).rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT, headers={"User-Agent": "marketplace-cli"})

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # -- plumbing --

    def _send(self, method: str, path: str, *, auth: bool, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            headers["Authorization"] = f"Bearer {self._access_token()}"
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        try:
            return self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, CliCode.UNREACHABLE, f"cannot reach the platform at {self.url}: {exc}",
                           "is it running? start it with: marketplace up (or sign in to another URL: "
                           "marketplace login --url URL)") from None

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """Send a call; an access token the API finds expired is refreshed and the call sent again."""
        resp = self._send(method, path, auth=auth, **kwargs)
        expired = resp.status_code == 401 and self._code(resp) == ErrorCode.TOKEN_EXPIRED
        if auth and expired and self.config.refresh_token:
            self.refresh()
            resp = self._send(method, path, auth=auth, **kwargs)
        if resp.status_code >= 400:
            raise _error_from(resp)
        return resp

    @staticmethod
    def _code(resp: httpx.Response) -> Code | None:
        try:
            return api_code(resp.json()["error"]["code"], resp.status_code)
        except (ValueError, KeyError, TypeError):
            return None

    def call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        """A JSON call: the decoded body (``None`` for an empty one)."""
        resp = self.request(method, path, auth=auth, **kwargs)
        return resp.json() if resp.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET a JSON resource."""
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        """POST a JSON body."""
        return self.call("POST", path, json=body if body is not None else {}, **kwargs)

    def pages(self, path: str, params: dict[str, Any] | None = None, *, limit: int | None = None,
              auth: bool = True) -> Iterator[dict[str, Any]]:
        """Every item of a paged list (``items`` + ``next_cursor``), up to ``limit`` items."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        count = 0
        while True:
            page = self.get(path, params=query, auth=auth)
            for item in page.get("items", []):
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = cursor

    def events(self, path: str, after: int = 0) -> Iterator[tuple[str, Any]]:
        """A Server-Sent Events stream as ``(event, data)`` pairs, resumed where it broke off."""
        last_id = str(after)
        while True:
            ended = False
            try:
                with self.http.stream("GET", path, headers={"Accept": "text/event-stream", "Last-Event-ID": last_id,
                                                            "Authorization": f"Bearer {self._access_token()}"},
                                      timeout=httpx.Timeout(30.0, connect=5.0, read=60.0)) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        expired = resp.status_code == 401 and self._code(resp) == ErrorCode.TOKEN_EXPIRED
                        if expired and self.config.refresh_token:
                            self.refresh()
                            continue
                        raise _error_from(resp)
                    event, data, = "message", ""
                    for line in resp.iter_lines():
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data += line[5:].strip()
                        elif line == "" and data:
                            yield event, json.loads(data)
                            if event in ("end", "timeout"):
                                ended = event == "end"
                                break
                            event, data = "message", ""
            except httpx.HTTPError as exc:
                raise ApiError(0, CliCode.UNREACHABLE, f"the log stream from {self.url} broke off: {exc}",
                               "run the same command again to resume") from None
            if ended:
                return

    # -- tokens --

    def _access_token(self) -> str:
        cfg = self.config
        if not cfg.access_token:
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "you are not signed in", "sign in first: marketplace login")
        if cfg.refresh_token and cfg.expires_at and time.time() > cfg.expires_at - REFRESH_MARGIN_SECONDS:
            self.refresh()
        assert cfg.access_token is not None
        return cfg.access_token

    def refresh(self) -> None:
        """Trade the refresh token for new tokens (the platform's in local mode, the OIDC
        issuer's in gcp mode) and store them."""
        cfg = self.config
        if not cfg.refresh_token:
            raise ApiError(401, ErrorCode.TOKEN_EXPIRED, "the access token expired", "sign in again: marketplace login")
        if cfg.mode == "gcp" and cfg.oidc.get("token_endpoint"):
            tokens = self._oidc_token({"grant_type": "refresh_token", "refresh_token": cfg.refresh_token,
                                       "client_id": cfg.oidc.get("client_id", "")})
        else:
            try:
                resp = self.http.post("/auth/token", json={"grant_type": "refresh_token",
                                                           "refresh_token": cfg.refresh_token})
            except httpx.HTTPError as exc:
                raise ApiError(0, CliCode.UNREACHABLE, f"cannot reach the platform at {self.url}: {exc}",
                               "is it running? start it with: marketplace up") from None
            if resp.status_code >= 400:
                raise _error_from(resp)
            tokens = resp.json()
        self.store_tokens(tokens)

    def store_tokens(self, tokens: dict[str, Any]) -> None:
        """Remember a token response (an OIDC one's ID token is the platform's bearer token)."""
        cfg = self.config
        cfg.access_token = str(tokens.get("id_token") or tokens["access_token"])
        if tokens.get("refresh_token"):
            cfg.refresh_token = str(tokens["refresh_token"])
        cfg.expires_at = time.time() + int(tokens.get("expires_in") or 0)
        cfg.save()

    def _oidc_token(self, form: dict[str, str]) -> dict[str, Any]:
        endpoint = self.config.oidc["token_endpoint"]
        try:
            resp = httpx.post(endpoint, data=form, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise ApiError(0, CliCode.UNREACHABLE, f"cannot reach the sign-in service at {endpoint}: {exc}",
                           "") from None
        body = _json_object(resp)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, oauth_code(body.get("error"), resp.status_code),
                           str(body.get("error_description") or body.get("error") or resp.text[:200]),
                           "sign in again: marketplace login")
        return body

    def device_login(self, issuer: str, client_id: str, scope: str, announce: Any) -> None:
        """gcp mode: the OAuth 2.0 device authorization grant (RFC 8628) at the OIDC ``issuer``;
        ``announce(uri, code)`` tells the user where to go."""
        def unusable(exc: Exception) -> ApiError:
            return ApiError(0, CliCode.OIDC_UNAVAILABLE, f"the issuer {issuer} offers no device sign-in: {exc}",
                            "check --issuer and --client-id")

        try:
            found = httpx.get(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=TIMEOUT)
            meta = IssuerMetadata.model_validate(_json_object(found))
            start = httpx.post(meta.device_authorization_endpoint, data={"client_id": client_id, "scope": scope},
                               timeout=TIMEOUT)
        except (httpx.HTTPError, ValidationError) as exc:
            raise unusable(exc) from None
        answer = _json_object(start)
        if start.status_code >= 400:
            raise ApiError(start.status_code, oauth_code(answer.get("error"), start.status_code),
                           str(answer.get("error_description") or answer.get("error") or start.text[:200]),
                           "check --issuer and --client-id")
        try:
            grant = DeviceGrant.model_validate(answer)
        except ValidationError as exc:
            raise unusable(exc) from None
        self.config.oidc = {"issuer": issuer, "client_id": client_id, "token_endpoint": meta.token_endpoint}
        announce(grant.verification_uri_complete or grant.verification_uri, grant.user_code)
        interval = grant.interval
        deadline = time.monotonic() + grant.expires_in
        while time.monotonic() < deadline:
            time.sleep(interval)
            try:
                tokens = self._oidc_token({"grant_type": DEVICE_GRANT, "device_code": grant.device_code,
                                           "client_id": client_id})
            except ApiError as exc:
                if exc.code == OAuthCode.AUTHORIZATION_PENDING:
                    continue
                if exc.code == OAuthCode.SLOW_DOWN:
                    interval += 5
                    continue
                raise
            self.store_tokens(tokens)
            return
        raise ApiError(401, OAuthCode.EXPIRED_TOKEN, "the sign-in code expired before it was used",
                       "run marketplace login again")


class IssuerMetadata(BaseModel):
    """What the CLI needs of an OIDC issuer's discovery document."""

    device_authorization_endpoint: str
    token_endpoint: str


class DeviceGrant(BaseModel):
    """An issuer's device authorization answer (RFC 8628 section 3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None = None
    interval: int = Field(default=5, ge=0, le=300)
    expires_in: int = Field(default=600, ge=1, le=86400)


def _json_object(resp: httpx.Response) -> dict[str, Any]:
    """An issuer's answer as a JSON object (``{}`` for an empty or non-JSON one, e.g. a proxy's page)."""
    try:
        body = resp.json() if resp.content else {}
    except ValueError:
        return {}
    return dict(body) if isinstance(body, dict) else {}
