"""Cloud Run job entrypoint: execute ONE agent-run task, then exit.

``python -m jobs.agent_run`` is started per delivery (the gcp queue pushes one through Cloud Tasks
to a job execution). It reads the same environment as the long-running data plane
(``MARKETPLACE_CONTROL_PLANE_URL``, ``MARKETPLACE_DATAPLANE_KEY``, see ``runtime.runner``),
registers, leases the deployment's next task (waiting up to ``MARKETPLACE_TASK_WAIT`` seconds),
executes it with the same executor, reports it and exits 0 — also when there was nothing to do:
the queue, not the job's exit code, decides whether a run is delivered again. SIGTERM (the job's
timeout) leaves the run at the next step boundary for redelivery.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from runtime.client import ControlPlaneError, DataPlaneClient
from runtime.runner import RunnerSettings, configure_logging
from runtime.worker import Worker

_log = logging.getLogger("marketplace.jobs.agent_run")


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run one task; 0 when it ran or there was none, 1 when the control plane could not be reached."""
    settings = RunnerSettings.from_env(os.environ if environ is None else environ)
    configure_logging(settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        _log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    client = DataPlaneClient(settings.control_plane_url, settings.dataplane_key.get_secret_value())
    # Stop at once on a signal: a job has no next run to drain for.
    worker = Worker(client, options=dataclasses.replace(settings.worker_options(), drain_seconds=0.0))
    try:
        worker.register()
        outcome = worker.run_once(wait=settings.task_wait, stop=stop)
    except ControlPlaneError as exc:
        _log.error("cannot reach the control plane: %s", exc)
        return 1
    finally:
        client.close()
    _log.info("done: %s", "no task was waiting" if outcome is None else f"the run ended {outcome.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
