"""Local mode: a SaaS deployment's data plane is one of the local worker processes.

Provisioning hands the deployment's credential to the local worker pool the way a secret is
mounted into a container: one file per deployment in ``<data_dir>/dataplanes/``, readable by
the owner only. The workers (``marketplace up --workers N``) serve every deployment listed
there, connecting to the control plane over HTTP like any other data plane.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from shared.deployments.ports import DataPlaneSpec


class LocalProvisioner:
    """Writes and removes ``<dir>/<deployment_id>.json`` (mode 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, deployment_id: str) -> Path:
        if not deployment_id.replace("_", "").isalnum():
            raise ValueError(f"not a deployment id: {deployment_id!r}")
        return self.directory / f"{deployment_id}.json"

    def provision(self, spec: DataPlaneSpec) -> None:
        """Publish the deployment to the local worker pool."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(spec.deployment_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(spec), fh)
        tmp.replace(path)

    def deprovision(self, deployment_id: str) -> None:
        """Withdraw it; the workers stop serving it."""
        self._path(deployment_id).unlink(missing_ok=True)
