"""Rate limits per caller, shared by every server process through PostgreSQL.

A caller is a key: ``user:<id>``, ``api_key:<id>`` (org and data-plane keys) or, for a request
without a credential that verifies, ``addr:<client address>``. Each key may make ``limit``
requests per fixed window of ``window_seconds``; the next one is refused with 429
``rate_limited`` and ``Retry-After`` (the seconds left in the window).

The count lives in ``rate_limit_hits`` (an unlogged table), so every process of ``marketplace
up`` and every function instance in gcp shares it. To keep a request's cost tiny, a process
counts in memory while a key is far from its limit and writes its hits in batches:

* **far from the limit** (this process's view of the window, plus this hit, stays at least
  ``batch`` below the limit) a hit is counted in memory; the ``batch``-th pending hit writes them
  all in one statement (``count_rate_limit_hits``), which answers the window's total across
  every process;
* **near the limit** every hit is written before it is admitted, and admitted only when the
  total the database answers is within the limit: the database decides, exactly;
* **over the limit** (a total the database answered) the process refuses without a statement
  until the window ends.

The bound this buys: each process holds at most ``batch - 1`` hits the others cannot see, so a
window admits at most ``limit + (processes - 1) * (batch - 1)`` requests; with one process, or a
limit of at most ``batch``, exactly ``limit``. Hits still pending when a window ends are not
written (the window is over: they can no longer limit anyone).

When the database cannot be reached the limiter lets the request through (its hits stay
pending) and, for the next few seconds, counts in memory only instead of waiting on the database
again: the request itself then meets the database and fails on its own terms, and ``/health``
can still say quickly what is down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries
from shared.kernel.errors import TooManyRequests

_Q = Queries("shared.identity")
_log = logging.getLogger("marketplace.rate_limits")
# Keys kept in memory before the windows that are over are dropped (an address flood stays bounded).
_MAX_KEYS = 50_000
# After a failed write, seconds during which hits are only counted in memory.
_UNREACHABLE_PAUSE = 5.0


@dataclass
class _Window:
    """One key's current window as this process sees it."""

    start: int
    known: int = 0  # the total the database last answered (every process's hits)
    pending: int = 0  # this process's hits not written yet
    writing: int = 0  # this process's hits being written right now


class RateLimiter:
    """Counts each caller's requests per fixed window; refuses the ones over the limit."""

    def __init__(self, db: Database, *, window_seconds: int = 60, batch: int = 32,
                 clock: Callable[[], float] = time.time) -> None:
        if window_seconds < 1 or batch < 1:
            raise ValueError("the window and the batch are at least 1")
        self.db = db
        self.window_seconds = window_seconds
        self.batch = batch
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._forgotten_before = 0  # windows older than this are deleted from the table already
        self._unreachable_until = 0.0  # the database failed a write: count in memory until then

    def hit(self, key: str, limit: int) -> None:
        """Count one request of ``key``; raise ``TooManyRequests`` when it is over ``limit``
        (0 or less: no limit)."""
        if limit <= 0:
            return
        now = self._clock()
        start = int(now // self.window_seconds) * self.window_seconds
        with self._lock:
            window = self._windows.get(key)
            if window is None or window.start != start:
                if window is None and len(self._windows) >= _MAX_KEYS:
                    self._drop_ended(start)
                window = self._windows[key] = _Window(start)
            if window.known >= limit:
                raise self._refusal(start, now)
            seen = window.known + window.pending + window.writing + 1
            if (seen <= limit - self.batch and window.pending + 1 < self.batch) or now < self._unreachable_until:
                window.pending += 1
                return
            # Near the limit, or a full batch: write this hit with the pending ones, and let the
            # database's total decide.
            hits = window.pending + 1
            window.pending = 0
            window.writing += hits
        total = self._write(key, start, hits)
        with self._lock:
            window.writing -= hits
            if total is None:  # the database is unreachable: keep the hits, let the request through
                window.pending += hits
                self._unreachable_until = now + _UNREACHABLE_PAUSE
                return
            window.known = max(window.known, total)
        if total > limit:
            raise self._refusal(start, now)

    def _write(self, key: str, start: int, hits: int) -> int | None:
        try:
            with self.db.read() as tx:
                if start - self.window_seconds > self._forgotten_before:
                    # Once per window and process: the windows before the previous one are over.
                    tx.execute(_Q.forget_rate_limit_windows, start - self.window_seconds)
                    self._forgotten_before = start - self.window_seconds
                row = tx.fetch_one(_Q.count_rate_limit_hits, key, start, hits)
        except Exception:  # noqa: BLE001 - fail open: the request meets the database itself next
            _log.warning("rate limit hits could not be written; the request is let through", exc_info=True)
            return None
        assert row is not None
        return int(row["hits"])

    def _refusal(self, start: int, now: float) -> TooManyRequests:
        retry_after = math.ceil(start + self.window_seconds - now)
        return TooManyRequests(f"too many requests: retry in {max(1, retry_after)} s", retry_after=retry_after)

    def _drop_ended(self, current: int) -> None:
        """Make room: windows that ended first; if the current window alone fills the table (a flood
        of new addresses), every window not being written, whose pending hits are then not
        counted (each such caller may get up to ``batch - 1`` more). Either way the table empties
        far enough that the next sweep is ``_MAX_KEYS`` new keys away."""
        for key in [k for k, w in self._windows.items() if w.start < current and not w.writing]:
            del self._windows[key]
        if len(self._windows) >= _MAX_KEYS // 2:
            for key in [k for k, w in self._windows.items() if not w.writing]:
                del self._windows[key]
