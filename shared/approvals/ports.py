"""What the approvals context needs from outside it: the cloud its remediations act on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ResourceActionError(Exception):
    """A remediation the cloud refused (unknown resource, bad machine type) or could not do."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class CloudResources(Protocol):
    """Applies remediation actions to an org's cloud resources.

    Actions are idempotent (stopping a stopped instance, resizing to the size it has, changes
    nothing and succeeds), so a resume redelivered after a crash may apply one again safely.
    """

    def stop(self, org_id: str, resource_id: str) -> Mapping[str, Any]:
        """Stop the resource; the outcome (``{"resource_id", "state", "previous_state"}``)."""
        ...

    def resize(self, org_id: str, resource_id: str, machine_type: str) -> Mapping[str, Any]:
        """Change the resource's machine type (stopping it first where the cloud requires it)."""
        ...
