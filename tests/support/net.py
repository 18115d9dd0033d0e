"""Loopback ports for tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now.

    Good for a server the test is about to start, and as an address that refuses connections.
    The port is only free when asked: a server started later may, rarely, find it taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
