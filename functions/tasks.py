"""The data-plane API for runs: lease tasks, heartbeat, stream logs, checkpoint, complete.

Only data-plane keys reach these operations, and each key only its own deployment's tasks and runs.
"""

from __future__ import annotations

from functions.operation import Call, Reply, operation
from shared.kernel.errors import BadRequest, ErrorCode
from shared.runs import (
    CheckpointIn,
    CheckpointList,
    CheckpointQuery,
    CheckpointWritesIn,
    CompleteIn,
    CompletionOut,
    HeartbeatIn,
    HeartbeatOut,
    LogBatchIn,
    LogBatchOut,
    TaskOut,
    TaskQuery,
)

LEASE_HEADER = "X-Lease-Token"
_MIB = 1024 * 1024
#: ``headers=`` of every data-plane operation that takes the lease in a header.
LEASE_HEADERS = {LEASE_HEADER: "The task's lease token (required)."}


def lease_token(call: Call) -> str:
    """The lease token a data-plane call sends in its header (400 lease_token_required without one)."""
    token = call.request.headers.get(LEASE_HEADER, "").strip()
    if not token or len(token) > 200:
        raise BadRequest(f"send the task's lease token in the {LEASE_HEADER} header",
                         code=ErrorCode.LEASE_TOKEN_REQUIRED)
    return token


@operation("GET", "/tasks/next", summary="Lease the next task (long poll)", tags=["data plane"], dataplane=True,
           query=TaskQuery, response=TaskOut, errors={404: ErrorCode.NOT_FOUND},
           also={204: "No task became due within the wait"})
def next_task(call: Call) -> TaskOut | Reply:
    q: TaskQuery = call.query
    task = call.services.runs.claim(call.caller, worker=q.worker or call.caller.actor, wait_seconds=q.wait,
                                    lease_seconds=q.lease_seconds)
    return Reply(status=204) if task is None else task


@operation("POST", "/tasks/{task_id}/heartbeat", summary="Extend a task's lease", tags=["data plane"],
           dataplane=True, body=HeartbeatIn, response=HeartbeatOut, idempotent=False,
           errors={409: ErrorCode.LEASE_LOST})
def task_heartbeat(call: Call) -> HeartbeatOut:
    body: HeartbeatIn = call.body
    return call.services.runs.heartbeat(call.caller, call.params["task_id"], body.lease_token, body.lease_seconds)


@operation("POST", "/agents/{agent_id}/runs/{run_id}/logs", summary="Append run log lines", tags=["data plane"],
           dataplane=True, body=LogBatchIn, response=LogBatchOut, max_body=4 * _MIB, idempotent=False,
           errors={409: (ErrorCode.LEASE_LOST, ErrorCode.RUN_FINISHED)})
def append_run_logs(call: Call) -> LogBatchOut:
    body: LogBatchIn = call.body
    return call.services.runs.append_logs(call.caller, call.params["agent_id"], call.params["run_id"],
                                          body.lease_token, body.lines)


@operation("POST", "/agents/{agent_id}/runs/{run_id}/complete", summary="Report a run's outcome",
           tags=["data plane"], dataplane=True, body=CompleteIn, response=CompletionOut, max_body=16 * _MIB,
           idempotent=False, errors={409: (ErrorCode.LEASE_LOST, ErrorCode.RUN_FINISHED)})
def complete_run(call: Call) -> Reply:
    answer, replayed = call.services.runs.complete(call.caller, call.params["agent_id"], call.params["run_id"],
                                                   call.body)
    return Reply(body=answer, headers={"Idempotent-Replayed": "true"} if replayed else {})


@operation("PUT", "/tasks/{task_id}/checkpoints/{checkpoint_id}", summary="Store a run checkpoint",
           tags=["data plane"], dataplane=True, body=CheckpointIn, status=204, max_body=64 * _MIB,
           errors={400: ErrorCode.LEASE_TOKEN_REQUIRED, 409: ErrorCode.LEASE_LOST}, headers=LEASE_HEADERS)
def put_checkpoint(call: Call) -> Reply:
    call.services.runs.put_checkpoint(call.caller, call.params["task_id"], lease_token(call),
                                      call.params["checkpoint_id"], call.body)
    return Reply(status=204)


@operation("PUT", "/tasks/{task_id}/checkpoints/{checkpoint_id}/writes", summary="Store a checkpoint's pending writes",
           tags=["data plane"], dataplane=True, body=CheckpointWritesIn, status=204, max_body=64 * _MIB,
           errors={400: ErrorCode.LEASE_TOKEN_REQUIRED, 409: ErrorCode.LEASE_LOST}, headers=LEASE_HEADERS)
def put_checkpoint_writes(call: Call) -> Reply:
    call.services.runs.put_writes(call.caller, call.params["task_id"], lease_token(call),
                                  call.params["checkpoint_id"], call.body)
    return Reply(status=204)


@operation("GET", "/tasks/{task_id}/checkpoints", summary="List a run's checkpoints", tags=["data plane"],
           dataplane=True, query=CheckpointQuery, response=CheckpointList,
           errors={400: ErrorCode.LEASE_TOKEN_REQUIRED, 409: ErrorCode.LEASE_LOST}, headers=LEASE_HEADERS)
def list_checkpoints(call: Call) -> CheckpointList:
    q: CheckpointQuery = call.query
    return call.services.runs.list_checkpoints(call.caller, call.params["task_id"], lease_token(call),
                                               checkpoint_ns=q.checkpoint_ns, checkpoint_id=q.checkpoint_id,
                                               before=q.before, limit=q.limit)
