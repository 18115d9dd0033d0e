"""gcp mode: ``POST /internal/scheduled``, the target of the Cloud Scheduler jobs.

Each job POSTs ``{"job": "<name>"}`` with an OIDC token of the scheduler's service account;
this runs that platform job (functions/scheduler.py) once. Every job is safe to run twice or
late: each acts on what is due at the time it runs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from functions.operation import Call, operation
from functions.scheduler import platform_jobs
from shared.kernel.errors import ErrorCode, Unprocessable


class ScheduledIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: str = Field(min_length=1, max_length=100)


class ScheduledOut(BaseModel):
    job: str
    # How many things the job acted on (deployments marked, runs closed, deliveries, pushes).
    handled: int


@operation("POST", "/internal/scheduled", summary="Run one periodic platform job", tags=["internal"],
           auth=False, body=ScheduledIn, response=ScheduledOut, idempotent=False,
           push=lambda services: services.scheduler_auth,
           rate_limited=False,  # Cloud Scheduler's few calls a minute
           errors={401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN, 404: ErrorCode.NOT_FOUND})
def run_scheduled_job(call: Call) -> ScheduledOut:
    # The decorator admitted Cloud Scheduler's token (push=); local mode runs the jobs in-process.
    name = call.body.job
    jobs = {job.name: job for job in platform_jobs(call.services)}
    if name not in jobs:
        raise Unprocessable(f"no periodic job named {name!r}",
                            details=[{"path": "job", "message": f"one of {', '.join(sorted(jobs))}"}])
    return ScheduledOut(job=name, handled=_handled(jobs[name].run()))


def _handled(result: object) -> int:
    if isinstance(result, int):
        return result
    if isinstance(result, list | tuple | set):
        return len(result)
    return int(getattr(result, "claimed", 0))  # a webhook delivery pass
