"""The pipe between a run's parent (the worker) and its child (agent code): framed JSON messages.

Each message is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an object). The child
is not trusted: the parent refuses a frame over ``MAX_FRAME`` bytes, one that is not a JSON
object, or a connection that closes mid-frame, with ``ProtocolError`` (the run then fails). The
framing is hand-written because it is twenty lines over ``socket``; ``multiprocessing.connection``
would unpickle what the child sends, which the parent must never do.
"""

from __future__ import annotations

import enum
import json
import socket
import struct
from typing import Any

MAX_FRAME = 32 * 1024 * 1024
_HEADER = struct.Struct(">I")


class Refusal(enum.StrEnum):
    """Why the parent refused a request of the child (a reply's ``code`` when not ``ok``). A
    refusal that passes on the control plane's answer carries the API's own ``ErrorCode`` instead
    (``stale_approval``, ``lease_lost``, ...)."""

    TOOL_REFUSED = "tool_refused"  # the tool is not granted to this deployment (default deny)
    UNKNOWN_REQUEST = "unknown_request"  # an ``op`` the protocol does not have
    NO_CHECKPOINTS = "no_checkpoints"  # the run has no checkpoint store
    NO_APPROVALS = "no_approvals"  # the run has no approvals desk
    BAD_REQUEST = "bad_request"  # a request whose fields are not what the op takes
    FAILED = "error"  # the request failed in the parent without a code of its own
    REFUSED = "refused"  # (child side) a reply that said not ok and gave no code


class ProtocolError(Exception):
    """The other side broke the protocol (or went away mid-message)."""


class Closed(ProtocolError):
    """The other side closed the connection between two messages."""


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one message."""
    body = json.dumps(message, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    sock.sendall(_HEADER.pack(len(body)) + body)


def _read(sock: socket.socket, n: int, *, first: bool) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            if first and left == n:
                raise Closed("the connection closed")
            raise ProtocolError("the connection closed mid-message")
        chunks.append(chunk)
        left -= len(chunk)
        first = False
    return b"".join(chunks)


def receive(sock: socket.socket) -> dict[str, Any]:
    """Receive one message (blocking, or up to the socket's timeout before the first byte)."""
    (length,) = _HEADER.unpack(_read(sock, _HEADER.size, first=True))
    if length > MAX_FRAME:
        raise ProtocolError(f"a message of {length} bytes is over the {MAX_FRAME}-byte limit")
    timeout = sock.gettimeout()
    sock.settimeout(None if timeout is None else max(timeout, 30.0))  # a started frame arrives whole
    try:
        body = _read(sock, length, first=False)
    finally:
        sock.settimeout(timeout)
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"a message is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("a message is not a JSON object")
    return message
