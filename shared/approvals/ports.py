"""What the approvals context needs from outside it: the cloud its remediations act on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


class ResourceActionError(Exception):
    """A remediation the cloud refused (unknown resource, bad machine type) or could not do."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ResourceOutcome:
    """What a remediation did to a resource, as the approval's execution records it."""

    resource_id: str
    state: str  # after the action ("stopped", "running", ...)
    previous_state: str
    cloud: str  # which adapter acted: "gce", "local"
    machine_type: str | None = None  # after a resize (or the unchanged type, where the cloud says it)
    previous_machine_type: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The outcome as stored and shown (absent fields left out)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


class CloudResources(Protocol):
    """Applies remediation actions to an org's cloud resources.

    Actions are idempotent (stopping a stopped instance, resizing to the size it has, changes
    nothing and succeeds), so a resume redelivered after a crash may apply one again safely.
    """

    def stop(self, org_id: str, resource_id: str) -> ResourceOutcome:
        """Stop the resource; what it did."""
        ...

    def resize(self, org_id: str, resource_id: str, machine_type: str) -> ResourceOutcome:
        """Change the resource's machine type (stopping it first where the cloud requires it)."""
        ...
