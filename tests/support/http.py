"""The test suite's one recording HTTP server.

A ``RecordingServer`` listens on a free loopback port, records every request it receives and
answers each with what the test's ``answer`` function returns. The tests build their stand-ins on
it: a webhook receiver answering from a script, Cloud Tasks' push target, Google's REST APIs
answering per route, a JWKS endpoint, a file server.

    with RecordingServer(lambda request: Reply(201, {"ok": True})) as server:
        call_something(server.url)
        [request] = server.wait_for(1)
        assert request.json() == {...}
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.wait import wait_until


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    target: str  # the request target as sent: the path and the query string
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.time() on arrival

    @property
    def path(self) -> str:
        """The target without its query string."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """The query parameters (the first value of each)."""
        return {name: values[0] for name, values in parse_qs(urlsplit(self.target).query).items()}

    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Reply:
    """What the server answers: ``bytes`` bodies are sent as they are, anything else as JSON."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering: a slow server

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        if isinstance(self.body, bytes):
            return self.body, dict(self.headers)
        return json.dumps(self.body).encode(), {"Content-Type": "application/json", **self.headers}


Answer = Callable[[Recorded], Reply]


class RecordingServer:
    """An HTTP server on 127.0.0.1 that records every request, then answers it with ``answer(request)``.

    Without ``answer`` every request gets an empty 200. ``requests`` lists what arrived, in order;
    ``wait_for`` waits until enough has. Close it (or use it as a context manager) to stop it; a
    closed server's port refuses connections.
    """

    def __init__(self, answer: Answer | None = None) -> None:
        self.requests: list[Recorded] = []
        self._answer: Answer = answer or (lambda _request: Reply())
        self._lock = threading.Lock()
        self._httpd = _Server(self)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def wait_for(self, count: int = 1, *, matching: Callable[[Recorded], bool] | None = None,
                 timeout: float = 10.0) -> list[Recorded]:
        """The recorded requests (those ``matching``, if given), once there are at least ``count``."""

        def enough() -> list[Recorded] | None:
            found = [r for r in self.received() if matching is None or matching(r)]
            return found if len(found) >= count else None

        try:
            return wait_until(enough, timeout=timeout, interval=0.01, what=f"{count} request(s)")
        except AssertionError:
            raise AssertionError(f"expected {count} matching request(s) within {timeout:g} s; "
                                 f"received {self.received()!r}") from None

    def received(self) -> list[Recorded]:
        """A copy of ``requests``, safe to iterate while requests arrive."""
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        """Stop serving and release the port (again: no-op)."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RecordingServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _handle(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
        return self._answer(request)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                           time.time())
        reply = self.server.owner._handle(request)
        if reply.delay:
            time.sleep(reply.delay)
        data, headers = reply.encoded()
        self.send_response(reply.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    def __init__(self, owner: RecordingServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a size cap, a timeout) is part of what the tests exercise.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
