"""Waiting in tests: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1,
               what: str = "condition") -> T:
    """The first truthy value ``predicate()`` returns, polled every ``interval`` seconds.

    Raises ``AssertionError`` naming ``what`` when ``timeout`` seconds pass without one (the
    predicate is always tried at least once, and once more after the deadline).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
