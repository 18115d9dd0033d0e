"""Deployments: the install request, the life cycle, and what the data plane is told."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from shared.identity import StrictModel
from shared.kernel.redacted import RedactOnInput, ShownData, ShownText


class DeploymentStatus(StrEnum):
    """The deployment state machine (see ``TRANSITIONS``)."""

    PENDING = "pending"
    PROVISIONING = "provisioning"
    READY = "ready"
    UNREACHABLE = "unreachable"
    FAILED = "failed"
    UNINSTALLED = "uninstalled"
    UPGRADE_PENDING_CONSENT = "upgrade_pending_consent"


S = DeploymentStatus

#: States a run may be created in. ``upgrade_pending_consent`` keeps running the version installed
#: before the upgrade, so its runs go on while the admin decides.
ACCEPTS_RUNS = frozenset({S.READY, S.UPGRADE_PENDING_CONSENT})
#: States whose job may execute a queued run: those, and ``unreachable`` (a deployment that stopped
#: heartbeating may still have a job that starts). Dispatch and run creation read the same sets, so a
#: run accepted on a deployment is never left without a job to run it.
JOB_MAY_RUN = ACCEPTS_RUNS | {S.UNREACHABLE}

# Every allowed move; anything else is a bug and is refused by ``check_transition``.
TRANSITIONS: dict[DeploymentStatus, frozenset[DeploymentStatus]] = {
    S.PENDING: frozenset({S.PROVISIONING, S.FAILED, S.UNINSTALLED}),
    S.PROVISIONING: frozenset({S.READY, S.FAILED, S.UNINSTALLED, S.UPGRADE_PENDING_CONSENT}),
    S.READY: frozenset({S.UNREACHABLE, S.UNINSTALLED, S.UPGRADE_PENDING_CONSENT, S.PROVISIONING}),
    S.UNREACHABLE: frozenset({S.READY, S.UNINSTALLED, S.UPGRADE_PENDING_CONSENT}),
    S.FAILED: frozenset({S.PROVISIONING, S.UNINSTALLED}),
    S.UPGRADE_PENDING_CONSENT: frozenset({S.READY, S.UNREACHABLE, S.PROVISIONING, S.UNINSTALLED}),
    S.UNINSTALLED: frozenset(),
}


class InvalidTransition(ValueError):
    """A move the state machine does not allow."""


def check_transition(current: DeploymentStatus, target: DeploymentStatus) -> None:
    """Raise ``InvalidTransition`` unless ``current → target`` is allowed."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"a deployment cannot go from {current.value} to {target.value}")


Slug = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class InstallRequest(StrictModel):
    agent_id: Slug
    version: Annotated[str, StringConstraints(max_length=100)] | None = None
    deployment_type: Annotated[str, StringConstraints(pattern="^(saas|byoc)$")] = "saas"
    config: dict[str, Any] = Field(default_factory=dict)


class UpgradeRequest(StrictModel):
    version: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class ConsentRequest(StrictModel):
    approve: bool
    comment: Annotated[str, StringConstraints(max_length=2000), RedactOnInput] = ""


class DeploymentOut(BaseModel):
    id: str
    org_id: str
    agent_id: str
    version: str
    deployment_type: str
    status: DeploymentStatus
    status_reason: ShownText | None = None
    config: ShownData = Field(description="The install's config, values under secret-named keys and "
                                          "credential shapes in text shown as [REDACTED].")
    granted_permissions: list[str]
    pending_version: str | None = None
    pending_permissions: list[str] | None = None
    dataplane: dict[str, Any] | None = None
    registered_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    created_by: str
    created_at: datetime
    updated_at: datetime


class InstallOut(DeploymentOut):
    dataplane_key: str | None = Field(
        default=None, description="BYOC only: the data plane's credential, shown once, stored as a hash.")


class RegisterRequest(StrictModel):
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    hostname: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    capabilities: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=50)


class RegisterOut(BaseModel):
    deployment_id: str
    org_id: str
    agent_id: str
    version: str
    status: DeploymentStatus
    heartbeat_interval_seconds: int
    config: dict[str, Any]
    granted_permissions: list[str]
    manifest: dict[str, Any]


@dataclass(frozen=True)
class InstalledSpan:
    """A deployment and the span it was installed (``DeploymentService.installed_during``)."""

    id: str
    org_id: str
    agent_id: str
    version: str
    installed_at: datetime
    uninstalled_at: datetime | None


@dataclass(frozen=True)
class RunnableDeployment:
    """What a run's start needs of its deployment (``DeploymentService.runnable``): whose it is,
    whether it may run, what it runs, and with which config and permissions."""

    id: str
    org_id: str
    agent_id: str
    version: str
    deployment_type: str
    status: DeploymentStatus
    config: dict[str, Any]
    granted_permissions: list[str]

    @property
    def accepts_runs(self) -> bool:
        """Whether a new run may be created on it."""
        return self.status in ACCEPTS_RUNS

    @property
    def job_may_run(self) -> bool:
        """Whether its job may execute a run already queued."""
        return self.status in JOB_MAY_RUN
