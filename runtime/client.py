"""The data plane's typed HTTP client for the control plane's data-plane API.

The data plane reaches the platform only through this client, with its deployment's data-plane
key, connecting out over HTTPS (so a BYOC cluster needs no inbound access). Every call it makes is
safe to repeat — heartbeats and checkpoints are idempotent, log lines carry client-side sequence
numbers, a completion is recorded once per lease — so transport errors, 429 and 5xx answers are
retried with backoff. A long poll that times out is retried as well; a task the control plane
leased for a lost answer is delivered again once its lease expires.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from shared.kernel.errors import ErrorCode

_log = logging.getLogger(__name__)

USER_AGENT = "agent-marketplace-dataplane/1"
LEASE_HEADER = "X-Lease-Token"
MAX_LOG_LINES_PER_CALL = 500
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ClientCode(enum.StrEnum):
    """The codes this client gives an error the control plane did not describe itself (every other
    code is the API's own ``ErrorCode``)."""

    UNREACHABLE = "unreachable"  # no answer at all (status 0): connection refused, reset, timed out
    HTTP_ERROR = "http_error"  # an error status without the API's JSON error body (a proxy's page)


class ControlPlaneError(Exception):
    """The control plane answered with an error (``status`` 0: it could not be reached)."""

    def __init__(self, status: int, code: str, message: str, *, details: Sequence[Any] = ()) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed."""
        return self.status == 0 or self.status in _RETRY_STATUSES


class LeaseLostError(ControlPlaneError):
    """This worker no longer holds the task: its lease expired and the task went to another worker,
    or the task already finished. Whatever the worker does next for that task is refused."""


class CredentialRejected(ControlPlaneError):
    """The data-plane key is unknown or revoked (the deployment was uninstalled or its key rotated)."""


@dataclass(frozen=True)
class Registration:
    """What the control plane tells a data plane when it registers."""

    deployment_id: str
    org_id: str
    agent_id: str
    version: str
    status: str
    heartbeat_interval_seconds: int
    config: dict[str, Any]
    granted_permissions: list[str]
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Task:
    """A leased task: one delivery of one run."""

    task_id: str
    lease_token: str
    lease_seconds: int
    run_id: str
    agent_id: str
    version: str
    inputs: dict[str, Any]
    config: dict[str, Any]
    granted_permissions: list[str]
    manifest: dict[str, Any]
    attempt: int
    max_attempts: int
    cancel_requested: bool
    next_log_seq: int
    #: issue 14: the version's code package (``sha256``, ``size``, ``kind``), None for a built-in agent
    package: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        """Parse the body of ``GET /tasks/next``."""
        optional = {"package"}
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name not in optional or name in data})


@dataclass(frozen=True)
class LogLine:
    """One structured log line of a run; ``seq`` numbers the run's lines from 1."""

    seq: int
    step: str
    message: str
    level: str = "info"
    fields: dict[str, Any] = field(default_factory=dict)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return {"seq": self.seq, "ts": self.ts.isoformat(), "level": self.level, "step": self.step,
                "message": self.message, "fields": self.fields}


@dataclass(frozen=True)
class Completion:
    """What the control plane recorded for a completion."""

    run_id: str
    status: str
    attempt: int
    retry_scheduled: bool


class DataPlaneClient:
    """Calls the data-plane API with one deployment's key. Thread-safe: a worker's heartbeat and
    log threads share it with the thread executing the run."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, retries: int = 4,
                 backoff_seconds: float = 0.5, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT})

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 retries: int | None = None) -> httpx.Response:
        attempts = (self.retries if retries is None else retries) + 1
        for attempt in range(1, attempts + 1):
            try:
                resp = self._http.request(method, path, json=json, params=params, headers=headers,
                                          timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                error: ControlPlaneError = ControlPlaneError(0, ClientCode.UNREACHABLE,
                                                                      f"{method} {path}: {exc}")
            else:
                if resp.status_code < 400:
                    return resp
                error = _error_of(resp)
            if not error.retryable or attempt == attempts:
                raise error
            delay = min(self.backoff_seconds * 2 ** (attempt - 1), 10.0) * (0.5 + random.random() / 2)  # noqa: S311
            _log.warning("control plane call failed (%s); retrying in %.1fs", error, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # -- registration and health ---------------------------------------------------------------
    def register(self, *, version: str, hostname: str, capabilities: Sequence[str] = ()) -> Registration:
        """Announce this data plane; the deployment becomes ``ready``."""
        data = self._request("POST", "/dataplanes/register", json={
            "version": version, "hostname": hostname[:253], "capabilities": list(capabilities)}).json()
        return Registration(**{name: data[name] for name in Registration.__dataclass_fields__})

    def heartbeat_dataplane(self) -> str:
        """Report this data plane alive; returns the deployment's status."""
        return str(self._request("POST", "/dataplanes/heartbeat").json()["status"])

    # -- tasks ---------------------------------------------------------------------------------
    def next_task(self, *, wait: float, lease_seconds: int, worker: str | None = None) -> Task | None:
        """Lease the deployment's next task, waiting up to ``wait`` seconds (≤ 30); None if there is none."""
        params: dict[str, Any] = {"wait": wait, "lease_seconds": lease_seconds}
        if worker:
            params["worker"] = worker[:200]
        resp = self._request("GET", "/tasks/next", params=params, timeout=wait + 30.0)
        if resp.status_code == 204:
            return None
        return Task.from_json(resp.json())

    def heartbeat(self, task_id: str, lease_token: str, *, lease_seconds: int) -> bool:
        """Extend the lease; returns whether a cancel was requested. ``LeaseLostError`` if it is gone."""
        data = self._request("POST", f"/tasks/{task_id}/heartbeat",
                             json={"lease_token": lease_token, "lease_seconds": lease_seconds}).json()
        return bool(data["cancel_requested"])

    def send_logs(self, agent_id: str, run_id: str, lease_token: str, lines: Sequence[LogLine]) -> tuple[int, int]:
        """Append log lines (any number: sent in batches); returns (accepted, duplicates)."""
        accepted = duplicates = 0
        for start in range(0, len(lines), MAX_LOG_LINES_PER_CALL):
            batch = lines[start:start + MAX_LOG_LINES_PER_CALL]
            data = self._request("POST", f"/agents/{agent_id}/runs/{run_id}/logs", json={
                "lease_token": lease_token, "lines": [line.to_json() for line in batch]}).json()
            accepted += int(data["accepted"])
            duplicates += int(data["duplicates"])
        return accepted, duplicates

    def complete(self, task: Task, *, status: str, metrics: Mapping[str, Any], outputs: Mapping[str, Any] | None = None,
                 error: str | None = None, retryable: bool = False) -> Completion:
        """Report the run's outcome (safe to repeat: the control plane records it once per lease)."""
        body: dict[str, Any] = {"task_id": task.task_id, "lease_token": task.lease_token, "status": status,
                                "metrics": dict(metrics), "retryable": retryable}
        if outputs is not None:
            body["outputs"] = dict(outputs)
        if error is not None:
            body["error"] = error[:8000]
        data = self._request("POST", f"/agents/{task.agent_id}/runs/{task.run_id}/complete", json=body).json()
        return Completion(**{name: data[name] for name in Completion.__dataclass_fields__})

    # -- checkpoints -----------------------------------------------------------------------------
    def put_checkpoint(self, task_id: str, lease_token: str, checkpoint_id: str, body: Mapping[str, Any]) -> None:
        """Store one checkpoint of the task's run."""
        self._request("PUT", f"/tasks/{task_id}/checkpoints/{checkpoint_id}", json=dict(body),
                      headers={LEASE_HEADER: lease_token})

    def put_checkpoint_writes(self, task_id: str, lease_token: str, checkpoint_id: str,
                              body: Mapping[str, Any]) -> None:
        """Store pending writes against a checkpoint."""
        self._request("PUT", f"/tasks/{task_id}/checkpoints/{checkpoint_id}/writes", json=dict(body),
                      headers={LEASE_HEADER: lease_token})

    def list_checkpoints(self, task_id: str, lease_token: str, *, checkpoint_ns: str = "",
                         checkpoint_id: str | None = None, before: str | None = None,
                         limit: int = 10) -> list[dict[str, Any]]:
        """The run's checkpoints, newest first, with their pending writes."""
        params: dict[str, Any] = {"checkpoint_ns": checkpoint_ns, "limit": limit}
        if checkpoint_id is not None:
            params["checkpoint_id"] = checkpoint_id
        if before is not None:
            params["before"] = before
        data = self._request("GET", f"/tasks/{task_id}/checkpoints", params=params,
                             headers={LEASE_HEADER: lease_token}).json()
        return list(data["items"])

    # -- billing (issue 16) ------------------------------------------------------------------------
    def report_usage(self, agent_id: str, run_id: str, lease_token: str, *, records: int, cpu_seconds: float
                     ) -> bool:
        """Report a running run's usage so far; True when the run reached its maximum charge."""
        data = self._request("POST", f"/agents/{agent_id}/runs/{run_id}/usage", retries=0, json={
            "lease_token": lease_token, "records_processed": records, "cpu_seconds": round(cpu_seconds, 6)}).json()
        return bool(data["stop"])


    # -- for approvals (issue 15): a run parked at gated calls, and an approved call's execution --
    def await_approval(self, task: Task, actions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Park the run at its gated calls; the control plane records an approval per call and the
        task's lease ends (the run resumes on a new task once every approval is decided)."""
        resp = self._request("POST", f"/agents/{task.agent_id}/runs/{task.run_id}/await-approval", json={
            "task_id": task.task_id, "lease_token": task.lease_token, "actions": [dict(a) for a in actions]})
        return dict(resp.json())

    def approval_decisions(self, task: Task) -> list[dict[str, Any]]:
        """The decided approvals of the task's run (for its resume)."""
        resp = self._request("GET", f"/tasks/{task.task_id}/approvals", headers={LEASE_HEADER: task.lease_token})
        return list(resp.json()["items"])

    def claim_execution(self, task: Task, approval_id: str, action_hash: str) -> dict[str, Any]:
        """Ask to execute an approved call with the call's own hash (409 ``stale_approval`` when it
        differs from the approved one); ``execute`` false means it executed before or was applied by
        the control plane, with ``execution`` its outcome."""
        resp = self._request("POST", f"/tasks/{task.task_id}/approvals/{approval_id}/execution",
                             json={"lease_token": task.lease_token, "action_hash": action_hash})
        return dict(resp.json())

    def record_execution(self, task: Task, approval_id: str, outcome: Mapping[str, Any],
                         monthly_saving_micros: int) -> dict[str, Any]:
        """Record what an approved call executed by the agent's own code did."""
        resp = self._request("POST", f"/tasks/{task.task_id}/approvals/{approval_id}/outcome", json={
            "lease_token": task.lease_token, "outcome": dict(outcome),
            "monthly_saving_micros": monthly_saving_micros})
        return dict(resp.json())
    # -- for memory (issue 17) --
    def memory_context(self, task: Task, *, query: str, session: str | None = None) -> dict[str, Any]:
        """The run's memory context (the levels and namespaces its manifest declares)."""
        body: dict[str, Any] = {"query": query, **({"session": session} if session else {})}
        data: dict[str, Any] = self._request("POST", f"/tasks/{task.task_id}/memory/context", json=body,
                                             headers={LEASE_HEADER: task.lease_token}).json()
        return data

    def store_memory(self, task: Task, *, summary: str | None, episodes: Sequence[Mapping[str, Any]]) -> list[str]:
        """Store what the run learned (a summary, episodes); the ids stored."""
        data = self._request("POST", f"/tasks/{task.task_id}/memory",
                             json={"summary": summary, "episodes": [dict(e) for e in episodes]},
                             headers={LEASE_HEADER: task.lease_token}).json()
        return [str(i) for i in data["ids"]]

    # -- agent packages (issue 14) --------------------------------------------------------------
    def fetch_package(self, sha256: str) -> bytes:
        """The bytes of the agent package with that digest (the caller verifies the digest)."""
        return self._request("GET", f"/dataplane/packages/{sha256}", timeout=120.0).content


def _error_of(resp: httpx.Response) -> ControlPlaneError:
    try:
        error = resp.json()["error"]
        code, message, details = str(error["code"]), str(error["message"]), error.get("details") or []
    except (ValueError, KeyError, TypeError):
        code, message, details = ClientCode.HTTP_ERROR, resp.text[:500], []
    if resp.status_code == 409 and code == ErrorCode.LEASE_LOST:
        return LeaseLostError(resp.status_code, code, message, details=details)
    if resp.status_code == 401:
        return CredentialRejected(resp.status_code, code, message, details=details)
    return ControlPlaneError(resp.status_code, code, message, details=details)
