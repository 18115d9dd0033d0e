"""gcp mode: ``POST /internal/tasks/dispatch``, the Cloud Tasks push target (see shared.runs.dispatch).

Not part of the public API: Cloud Tasks calls the function's own URL with a Google OIDC token,
and the API Gateway configuration leaves ``internal`` operations out.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from functions.operation import Call, operation
from shared.kernel.errors import ErrorCode
from shared.runs import Delivery, DispatchReason


class DispatchIn(BaseModel):
    """The body ``CloudTasksQueue`` gives each push."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, max_length=100)
    attempt: int = Field(ge=1, le=1000)
    kind: str = Field(max_length=100)
    run_id: str | None = Field(default=None, max_length=100)
    org_id: str = Field(max_length=100)
    deployment_id: str | None = Field(default=None, max_length=100)


class DispatchOut(BaseModel):
    outcome: Literal["started", "dropped"]
    reason: DispatchReason
    execution: str | None = None


@operation("POST", "/internal/tasks/dispatch", summary="Start the job for a pushed task delivery",
           tags=["internal"], auth=False, body=DispatchIn, response=DispatchOut, idempotent=False,
           push=lambda services: services.dispatch.auth if services.dispatch is not None else None,
           rate_limited=False,  # Cloud Tasks' pushes, paced by the queue's own rate
           errors={401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN, 404: ErrorCode.NOT_FOUND,
                   503: (ErrorCode.TASK_NOT_VISIBLE, ErrorCode.JOB_START_FAILED)})
def dispatch_task(call: Call) -> DispatchOut:
    service = call.services.dispatch
    assert service is not None  # the decorator answered 404 without it (push=)
    body: DispatchIn = call.body
    result = service.dispatch(Delivery(task_id=body.task_id, attempt=body.attempt))
    return DispatchOut(outcome=result.outcome, reason=result.reason, execution=result.execution)
