"""Ports: the one free-port helper (the CLI's ``--port 0``, the embedded PostgreSQL, the tests) and the
one check that a given port can be listened on."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    Good for a server about to start, and (in tests) as an address that refuses connections. The
    port is only free when asked: a server started later may, rarely, find it taken, and the
    callers that start one retry or fail clearly.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bind_refused(host: str, port: int) -> OSError | None:
    """Why a server could not listen on ``host:port`` now (None: it could).

    Binds as a server does (``SO_REUSEADDR``), so connections of a stopped server lingering in
    TIME_WAIT do not count; only another listener does.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None
