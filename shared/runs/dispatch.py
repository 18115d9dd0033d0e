"""gcp mode: the target of Cloud Tasks pushes, which starts a Cloud Run job execution per delivery.

A push says "delivery ``attempt`` of task ``task_id`` is due". PostgreSQL, not the push, is the
truth (see docs/QUEUE.md): the push may arrive before the enqueueing transaction committed, twice,
late, or for a task that has since finished. So each push is checked against the task's row:

* row not visible yet and the task id younger than ``visibility_grace_seconds``: 503, and Cloud
  Tasks retries with its backoff; older than that, the enqueue rolled back: dropped;
* task final (done, dead, cancelled), or its lease held by a live worker: dropped;
* a delivery other than the next one (``attempt`` != the task's attempt + 1): dropped as stale;
* the deployment is not a SaaS one (a BYOC data plane polls), or is gone: dropped;
* otherwise one execution of the deployment's job is started; it leases the task itself, so a
  duplicate push that starts a second execution finds nothing to claim and exits.

"Dropped" answers 200 so Cloud Tasks stops retrying. Only Cloud Tasks may call: the request
carries a Google-signed OIDC token for the dispatch service account, audience the target URL.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Literal

from shared.deployments import DeploymentService, JobLauncher
from shared.identity import PushAuth
from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries
from shared.kernel.errors import ErrorCode, Unavailable
from shared.kernel.ids import id_time

_log = logging.getLogger(__name__)
_Q = Queries("shared.runs")

_FINAL = frozenset({"done", "dead", "cancelled"})


@dataclass(frozen=True)
class Delivery:
    """What a push carries (the body ``CloudTasksQueue.push`` writes)."""

    task_id: str
    attempt: int


class DispatchReason(enum.StrEnum):
    """Why a push started its job, or was dropped (acknowledged without starting one)."""

    DUE = "due"  # the delivery is the task's next attempt and it is due: the job started
    UNKNOWN_TASK = "unknown_task"  # no such task, and too old to be one whose transaction has not committed
    TASK_FINISHED = "task_finished"  # the task reached a final state already
    LEASE_HELD = "lease_held"  # a worker holds the task's lease, which has not expired
    STALE_DELIVERY = "stale_delivery"  # a push of an attempt other than the next one (a duplicate)
    DEPLOYMENT_NOT_PUSHED = "deployment_not_pushed"  # the deployment is not a runnable SaaS job


@dataclass(frozen=True)
class DispatchResult:
    """What the dispatch did with one push."""

    outcome: Literal["started", "dropped"]
    reason: DispatchReason
    execution: str | None = None


class DispatchService:
    """Checks a push against PostgreSQL and starts the deployment's job when it is due."""

    def __init__(self, db: Database, deployments: DeploymentService, launcher: JobLauncher, auth: PushAuth, *,
                 visibility_grace_seconds: float = 60.0) -> None:
        self.db = db
        self.deployments = deployments
        self.launcher = launcher
        self.auth = auth
        self.visibility_grace_seconds = visibility_grace_seconds

    def dispatch(self, delivery: Delivery) -> DispatchResult:
        """Start the job for ``delivery`` if it is the next one due, else say why not."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.dispatch_task, delivery.task_id)
            if row is None:
                made = id_time(delivery.task_id)
                if made is not None and time.time() - made < self.visibility_grace_seconds:
                    # Pushed before its transaction committed: Cloud Tasks retries with backoff.
                    raise Unavailable("the task is not visible yet", code=ErrorCode.TASK_NOT_VISIBLE)
                return self._dropped(delivery, DispatchReason.UNKNOWN_TASK)
            if row["state"] in _FINAL:
                return self._dropped(delivery, DispatchReason.TASK_FINISHED)
            if row["state"] == "leased" and not row["due"]:
                return self._dropped(delivery, DispatchReason.LEASE_HELD)
            if delivery.attempt != int(row["attempt"]) + 1:
                return self._dropped(delivery, DispatchReason.STALE_DELIVERY)
            deployment_id = row["deployment_id"]
            deployment = self.deployments.runnable(tx, deployment_id) if deployment_id is not None else None
        if deployment is None or deployment.deployment_type != "saas" or not deployment.job_may_run:
            return self._dropped(delivery, DispatchReason.DEPLOYMENT_NOT_PUSHED)
        try:
            execution = self.launcher.start_execution(deployment.id)
        except Exception as exc:
            _log.warning("could not start the job for task %s", delivery.task_id, exc_info=True)
            raise Unavailable("could not start the deployment's job; the push will be retried",
                              code=ErrorCode.JOB_START_FAILED) from exc
        return DispatchResult("started", DispatchReason.DUE, execution)

    def _dropped(self, delivery: Delivery, reason: DispatchReason) -> DispatchResult:
        _log.info("push for task %s attempt %d dropped: %s", delivery.task_id, delivery.attempt, reason)
        return DispatchResult("dropped", reason)
