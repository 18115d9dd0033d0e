"""Provisioning a deployment's data plane. The control plane never pushes to a data plane:
it only prepares one, which then connects out and registers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class DataPlaneSpec:
    """What a SaaS data plane needs to start: where to connect, and with which credential."""

    deployment_id: str
    org_id: str
    agent_name: str
    agent_version: str
    image: str | None
    control_plane_url: str
    api_key: str = field(repr=False)
    timeout_seconds: int = 900
    cpu: str = "1"
    memory: str = "2Gi"
    config: dict[str, Any] = field(default_factory=dict)


class Provisioner(Protocol):
    """Creates, updates and removes the SaaS data plane of a deployment."""

    def provision(self, spec: DataPlaneSpec) -> None:
        """Create (or replace) the data plane for ``spec.deployment_id``."""
        ...

    def deprovision(self, deployment_id: str) -> None:
        """Remove it; removing one that does not exist is not an error."""
        ...
