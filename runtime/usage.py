"""Usage heartbeats (billing, issue 16): while a run executes, the runner reports what it has used
so far (records counted through the runner, CPU measured by the runner) every second; when the
control plane answers that the run reached its maximum charge, the run is stopped at once.

The executor publishes its run's progress with :func:`publish` (one hook line), the worker starts a
:class:`UsageHeartbeat` beside the lease keeper and stops it with the run (hook lines marked
"billing (issue 16)"). A heartbeat that fails is tried again at the next tick; the completion's
charge is capped by the run's reservation in any case, so a missed stop never overcharges.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from runtime.client import ControlPlaneError, LeaseLostError

_log = logging.getLogger(__name__)

Progress = Callable[[], Mapping[str, float]]
"""A run's counters now (``records_processed``, ``cpu_seconds``), as the executor's context gives them."""

_probes: dict[str, Progress] = {}
_probes_lock = threading.Lock()

DEFAULT_INTERVAL_SECONDS = 1.0


def publish(run_id: str, progress: Progress) -> None:
    """Make a running run's counters readable by its usage heartbeat."""
    with _probes_lock:
        _probes[run_id] = progress


def withdraw(run_id: str) -> None:
    """The run ended: forget its counters."""
    with _probes_lock:
        _probes.pop(run_id, None)


def progress_of(run_id: str) -> Progress | None:
    """The published counters of ``run_id``, if any."""
    with _probes_lock:
        return _probes.get(run_id)


class UsageHeartbeat:
    """Reports one run's usage every ``interval`` seconds; calls ``on_stop`` once when told to stop.

    ``send(records, cpu_seconds)`` posts the report and answers whether the run must stop.
    """

    def __init__(self, run_id: str, send: Callable[[int, float], bool], on_stop: Callable[[], object], *,
                 interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self.run_id = run_id
        self.send = send
        self.on_stop = on_stop
        self.interval = interval
        self.stopped_by_cap = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"usage-{run_id}", daemon=True)

    def start(self) -> None:
        """Start reporting."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting (the run ended)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        last: tuple[int, float] | None = None
        while not self._stop.wait(self.interval):
            probe = progress_of(self.run_id)
            if probe is None:
                continue
            counters = probe()
            now = (int(counters.get("records_processed", 0)), float(counters.get("cpu_seconds", 0.0)))
            if now == last:
                continue
            try:
                must_stop = self.send(*now)
            except LeaseLostError:
                return  # the lease keeper sees it too and the run is abandoned
            except ControlPlaneError as exc:
                if exc.status == 404:
                    return
                _log.warning("usage heartbeat of run %s failed: %s", self.run_id, exc)
                continue
            last = now
            if must_stop:
                _log.warning("run %s reached its maximum charge: stopping it", self.run_id)
                self.stopped_by_cap.set()
                self.on_stop()
                return
