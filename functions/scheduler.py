"""The platform's periodic jobs, and the thread that runs them in local mode.

In gcp mode Cloud Scheduler triggers each job by name (``POST /internal/scheduled``,
functions/scheduled.py; the names are the keys of terraform's ``scheduled_jobs``) at most once a
minute; locally ``marketplace up`` runs them in one background thread on the intervals below.
A job that fails is logged and tried again at its next turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.composition import Container

_log = logging.getLogger("marketplace.scheduler")


@dataclass(frozen=True)
class ScheduledJob:
    """A job and how often it runs."""

    name: str
    every_seconds: float
    run: Callable[[], object]


def platform_jobs(container: Container) -> list[ScheduledJob]:
    """The periodic jobs of the services in ``container``."""
    jobs = [
        # Ready deployments silent for three heartbeats become unreachable.
        ScheduledJob("deployments-unreachable", 30.0, container.deployments.mark_unreachable),
        # Unfinished runs whose task ended without them (a lease that expired on the last attempt).
        ScheduledJob("runs-reconcile", 30.0, container.runs.reconcile),
        # Webhook deliveries that are due (first attempts and retries after their backoff).
        ScheduledJob("webhooks-deliver", 1.0, container.webhooks.deliver_due),
        # Data keys still wrapped by an older key-encryption key are wrapped again by the current one.
        ScheduledJob("secrets-rewrap", 600.0, container.secrets.rewrap),
        # Webhook secrets sealed by an org's older data key (or the platform key ring) are sealed again.
        ScheduledJob("webhooks-reseal", 600.0, container.webhooks.reseal_secrets),
        # Webhook history (events, deliveries, attempts) older than 30 days that nothing waits on.
        ScheduledJob("webhooks-purge", 3600.0, container.webhooks.purge),
        # billing (issue 16): close last month into invoices (once), send drafts, freeze orgs unpaid
        # past the grace period; hourly, so a missed run is caught up within the hour.
        ScheduledJob("billing-cycle", 3600.0, container.invoicing.run_cycle),
        # billing (issue 16): pay developers last month's balance (once per month, >= 100 USD).
        ScheduledJob("billing-payouts", 3600.0, container.payouts.run_monthly),
        # issue 15: pending approvals past their expiry (the run resumes not approved), reminders
        # before it, and the notification outbox (email, Slack) with its retries.
        ScheduledJob("approvals-expire", 30.0, container.approvals.expire_due),
        ScheduledJob("approvals-remind", 60.0, container.approvals.remind_due),
        ScheduledJob("notifications-deliver", 2.0, lambda: container.notifications.deliver_due().delivered),
    ]
    # -- memory (issue 17): expired Level 2/4 memories are deleted in bounded batches.
    jobs.append(ScheduledJob("memory-gc", 300.0, lambda: container.memory.gc().deleted))
    if container.queue_relay is not None:  # a push-delivering queue re-pushes due redeliveries
        jobs.append(ScheduledJob("queue-relay", 10.0, container.queue_relay))
    return jobs


class LocalScheduler:
    """Runs ``jobs`` on their intervals in one daemon thread until ``stop``."""

    def __init__(self, jobs: Sequence[ScheduledJob]) -> None:
        self.jobs = list(jobs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the job running now, if any."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        due = {job.name: time.monotonic() + job.every_seconds for job in self.jobs}
        while not self._stop.is_set():
            now = time.monotonic()
            for job in self.jobs:
                if now < due[job.name]:
                    continue
                try:
                    job.run()
                except Exception:  # noqa: BLE001 - one job's failure must not stop the others
                    _log.exception("scheduled job %s failed", job.name)
                due[job.name] = time.monotonic() + job.every_seconds
            wait = min(due.values()) - time.monotonic() if due else 1.0
            self._stop.wait(max(wait, 0.05))
