"""The Compute Engine adapter of the cloud-resources port with the real ``google-cloud-compute``
clients (REST transport) against a stubbed Compute Engine API: stop, resize, idempotence, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1
from support.http import Recorded, RecordingServer, Reply

from shared.approvals import ResourceActionError
from shared.approvals.adapters.gce_resources import ComputeEngineResources

BASE = "/compute/v1/projects/proj/zones/europe-west1-b"


class FakeCompute:
    """Instances and zone operations, as Compute Engine's REST API answers them."""

    def __init__(self) -> None:
        self.instances = {"vm-idle": {"status": "RUNNING", "type": "e2-standard-4"}}
        self.operations: dict[str, int] = {}
        self.server = RecordingServer(self.answer)

    def answer(self, request: Recorded) -> Reply:
        path = request.path
        if path.startswith(f"{BASE}/operations/") and path.endswith("/wait"):
            name = path.split("/")[-2]
            return Reply(200, {"name": name, "status": "DONE", "kind": "compute#operation"})
        parts = path.removeprefix(f"{BASE}/instances/").split("/")
        instance = self.instances.get(parts[0])
        if instance is None:
            return Reply(404, {"error": {"code": 404, "message": "The resource was not found", "errors": []}})
        if request.method == "GET":
            return Reply(200, {"name": parts[0], "status": instance["status"], "machineType":
                               f"https://www.googleapis.com{BASE}/machineTypes/{instance['type']}"})
        op = f"op-{len(self.operations) + 1}"
        self.operations[op] = 1
        if parts[1] == "stop":
            instance["status"] = "TERMINATED"
        elif parts[1] == "setMachineType":
            body = json.loads(request.body)
            if instance["status"] != "TERMINATED":
                return Reply(400, {"error": {"code": 400, "message": "must be stopped", "errors": []}})
            instance["type"] = body["machineType"].rsplit("/", 1)[-1]
        return Reply(200, {"name": op, "status": "RUNNING", "kind": "compute#operation"})


@pytest.fixture
def fake() -> Iterator[FakeCompute]:
    compute = FakeCompute()
    with compute.server:
        yield compute


def adapter(fake: FakeCompute) -> ComputeEngineResources:
    options: Any = {"api_endpoint": fake.server.url}
    return ComputeEngineResources(
        "proj",
        instances=compute_v1.InstancesClient(transport="rest", credentials=AnonymousCredentials(),
                                             client_options=options),
        operations=compute_v1.ZoneOperationsClient(transport="rest", credentials=AnonymousCredentials(),
                                                   client_options=options))


def test_stop_waits_for_the_operation_and_is_idempotent(fake: FakeCompute) -> None:
    resources = adapter(fake)
    outcome = resources.stop("org_1", "//compute.googleapis.com/projects/proj/zones/europe-west1-b/instances/vm-idle")
    assert outcome.state == "stopped" and outcome.previous_state == "running"
    calls = [(r.method, r.path) for r in fake.server.received()]
    assert ("POST", f"{BASE}/instances/vm-idle/stop") in calls and ("POST", f"{BASE}/operations/op-1/wait") in calls
    again = resources.stop("org_1", "europe-west1-b/vm-idle")
    assert again.previous_state == "terminated"
    assert [r.path for r in fake.server.received()].count(f"{BASE}/instances/vm-idle/stop") == 1  # no second stop


def test_resize_stops_then_sets_the_machine_type(fake: FakeCompute) -> None:
    outcome = adapter(fake).resize("org_1", "projects/proj/zones/europe-west1-b/instances/vm-idle", "e2-small")
    assert outcome.machine_type == "e2-small" and outcome.previous_machine_type == "e2-standard-4"
    assert fake.instances["vm-idle"] == {"status": "TERMINATED", "type": "e2-small"}
    [set_type] = [r for r in fake.server.received() if r.path.endswith("/setMachineType")]
    assert set_type.json() == {"machineType": "zones/europe-west1-b/machineTypes/e2-small"}


def test_unknown_instances_and_bad_ids_are_refused(fake: FakeCompute) -> None:
    resources = adapter(fake)
    with pytest.raises(ResourceActionError, match="no such instance") as err:
        resources.stop("org_1", "europe-west1-b/vm-gone")
    assert err.value.retryable is False
    with pytest.raises(ResourceActionError, match="not a Compute Engine instance"):
        resources.stop("org_1", "arn:aws:ec2:i-123")
