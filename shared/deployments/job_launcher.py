"""Starting one execution of a deployment's data-plane job (gcp mode's push delivery)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class JobLauncher(Protocol):
    """Starts a run-once worker for a deployment; it claims its task from the queue itself."""

    def start_execution(self, deployment_id: str) -> str:
        """Start one execution of the deployment's job; returns a name to log it by."""
        ...
