"""The wire side of a webhook delivery: Standard Webhooks signing and one pinned HTTP POST.

Signing follows the Standard Webhooks specification (standardwebhooks.com): the secret is
``whsec_`` + base64 of random bytes; the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``;
``webhook-signature`` is ``v1,`` + base64 of its HMAC-SHA256 under the secret's decoded bytes.

The POST uses ``http.client`` (the layer ``urllib`` is built on) directly, because urllib would
follow redirects and honour proxy environment variables, and either would send the request
somewhere the destination check never approved. The connection goes to the exact address the
check approved; the URL's host name is still the Host header and the TLS server name, and the
certificate is verified against it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import json
import secrets
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.webhooks.destinations import Destination

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
USER_AGENT = "agent-marketplace-webhooks/1"
MAX_EXCERPT_BYTES = 1024


def new_signing_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for (its base64 part, decoded)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret's key is not valid base64") from exc


def sign(key: bytes, *, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")


def event_body(event_type: str, occurred_at: datetime, data: Mapping[str, Any]) -> bytes:
    """The JSON body of an event: ``{"type", "timestamp", "data"}``."""
    payload = {"type": event_type, "timestamp": occurred_at.isoformat().replace("+00:00", "Z"), "data": data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signed_headers(key: bytes, *, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of a delivery request."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id=message_id, timestamp=timestamp, body=body),
    }


@dataclass(frozen=True)
class PostResult:
    """What one POST achieved: the status (None when no response came back) or why it failed."""

    status_code: int | None
    error: str | None
    response_excerpt: str | None
    duration_ms: int


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to a fixed address; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a fixed address, with the URL's host as server name and certificate identity."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post(destination: Destination, address: str, *, headers: Mapping[str, str], body: bytes,
         timeout: float, tls: ssl.SSLContext | None = None) -> PostResult:
    """POST ``body`` to ``destination`` through ``address``; never follows a redirect, never raises."""
    started = time.monotonic()
    deadline = started + timeout
    conn: http.client.HTTPConnection
    if destination.scheme == "https":
        conn = _PinnedHTTPSConnection(destination.host, destination.port, address=address, timeout=timeout,
                                      context=tls or ssl.create_default_context())
    else:
        conn = _PinnedHTTPConnection(destination.host, destination.port, address=address, timeout=timeout)
    status: int | None = None
    excerpt: str | None = None
    error: str | None = None
    try:
        conn.request("POST", destination.target, body=body, headers=dict(headers))
        if conn.sock is not None:
            # The timeout bounds the whole exchange, not each socket operation.
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
        response = conn.getresponse()
        status = response.status
        raw = response.read(MAX_EXCERPT_BYTES)
        excerpt = raw.decode("utf-8", "replace") if raw else None
    except TimeoutError:
        error = f"timed out after {timeout:g}s"
    except ssl.SSLCertVerificationError as exc:
        error = f"TLS certificate verification failed: {exc.verify_message}"
    except ssl.SSLError as exc:
        error = f"TLS error: {exc.reason or exc}"
    except ConnectionRefusedError:
        error = "connection refused"
    except http.client.HTTPException as exc:
        error = f"invalid HTTP response: {type(exc).__name__}"
    except OSError as exc:
        error = f"connection failed: {exc.strerror or type(exc).__name__}"
    finally:
        conn.close()
    return PostResult(status_code=status, error=error, response_excerpt=excerpt,
                      duration_ms=round((time.monotonic() - started) * 1000))
