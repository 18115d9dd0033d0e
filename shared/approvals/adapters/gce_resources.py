"""Compute Engine remediations: stop an instance, change its machine type (google-cloud-compute).

A resource id is the instance's path, ``projects/{project}/zones/{zone}/instances/{name}`` (as
FOCUS exports from Google Cloud name it, possibly behind a ``//compute.googleapis.com/`` prefix),
or ``{zone}/{name}`` in the adapter's project. Both actions are idempotent: stopping a stopped
instance and setting the machine type it has succeed without a change. A resize stops the instance
first (Compute Engine requires it) and leaves it stopped: restarting is the owner's decision.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from shared.approvals.ports import ResourceActionError, ResourceOutcome

_PATH = re.compile(r"(?:^|/)projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)$")
_SHORT = re.compile(r"^(?P<zone>[a-z0-9-]+)/(?P<name>[a-z0-9-]+)$")
_TIMEOUT_SECONDS = 300


class ComputeEngineResources:
    """``CloudResources`` on Compute Engine."""

    def __init__(self, project: str, *, instances: Any = None, operations: Any = None) -> None:
        from google.cloud import compute_v1  # noqa: PLC0415 - heavy: only when this adapter is used

        self.project = project
        self.compute = compute_v1
        self.instances = instances or compute_v1.InstancesClient()
        self.operations = operations or compute_v1.ZoneOperationsClient()

    def _locate(self, resource_id: str) -> tuple[str, str, str]:
        found = _PATH.search(resource_id) or _SHORT.match(resource_id)
        if found is None:
            raise ResourceActionError(f"{resource_id!r} is not a Compute Engine instance path")
        groups = found.groupdict()
        return groups.get("project") or self.project, groups["zone"], groups["name"]

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions  # noqa: PLC0415

        try:
            return fn(**kwargs)
        except exceptions.NotFound as exc:
            raise ResourceActionError(f"{what}: no such instance") from exc
        except (exceptions.BadRequest, exceptions.Forbidden, exceptions.PermissionDenied) as exc:
            raise ResourceActionError(f"{what}: {exc.message}") from exc
        except exceptions.GoogleAPICallError as exc:
            raise ResourceActionError(f"{what}: {exc.message}", retryable=True) from exc

    def _wait(self, project: str, zone: str, operation: Any) -> None:
        name = getattr(operation, "name", None)
        status = getattr(operation, "status", None)
        done = self.compute.Operation.Status.DONE
        while name and status != done:
            waited = self._call("waiting for the operation", self.operations.wait, project=project, zone=zone,
                                operation=name, timeout=_TIMEOUT_SECONDS)
            status = waited.status
            if waited.error and waited.error.errors:
                raise ResourceActionError(f"the operation failed: {waited.error.errors[0].message}")

    def _instance(self, project: str, zone: str, name: str) -> Any:
        return self._call("reading the instance", self.instances.get, project=project, zone=zone, instance=name)

    def stop(self, org_id: str, resource_id: str) -> ResourceOutcome:
        """Stop the instance (nothing to do when it is stopped already)."""
        del org_id  # the adapter's credentials are the org's project access
        project, zone, name = self._locate(resource_id)
        before = self._instance(project, zone, name)
        if before.status not in ("TERMINATED", "STOPPED"):
            operation = self._call("stopping the instance", self.instances.stop, project=project, zone=zone,
                                   instance=name)
            self._wait(project, zone, operation)
        return ResourceOutcome(resource_id=resource_id, state="stopped", previous_state=before.status.lower(),
                               cloud="gce")

    def resize(self, org_id: str, resource_id: str, machine_type: str) -> ResourceOutcome:
        """Stop the instance and set its machine type."""
        project, zone, name = self._locate(resource_id)
        before = self._instance(project, zone, name)
        previous_type = before.machine_type.rsplit("/", 1)[-1]
        stopped = self.stop(org_id, resource_id)
        if previous_type != machine_type:
            request = self.compute.InstancesSetMachineTypeRequest(
                machine_type=f"zones/{zone}/machineTypes/{machine_type}")
            operation = self._call("setting the machine type", self.instances.set_machine_type, project=project,
                                   zone=zone, instance=name, instances_set_machine_type_request_resource=request)
            self._wait(project, zone, operation)
        return dataclasses.replace(stopped, machine_type=machine_type, previous_machine_type=previous_type)
