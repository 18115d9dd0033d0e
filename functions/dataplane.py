"""The data-plane API: data planes connect out with their deployment's key."""

from __future__ import annotations

from functions.operation import Call, operation
from shared.deployments import HEARTBEAT_INTERVAL_SECONDS, DeploymentOut, RegisterOut, RegisterRequest


@operation("POST", "/dataplanes/register", summary="Register a data plane", tags=["data plane"], dataplane=True,
           body=RegisterRequest, response=RegisterOut, idempotent=False)
def register_dataplane(call: Call) -> RegisterOut:
    b = call.body
    row, manifest = call.services.deployments.register(call.caller, version=b.version, hostname=b.hostname,
                                                       capabilities=b.capabilities)
    return RegisterOut(deployment_id=row["id"], org_id=row["org_id"], agent_id=row["agent_id"],
                       version=row["version"], status=row["status"],
                       heartbeat_interval_seconds=HEARTBEAT_INTERVAL_SECONDS, config=row["config"],
                       granted_permissions=row["granted_permissions"],
                       manifest=manifest.model_dump(mode="json"))


@operation("POST", "/dataplanes/heartbeat", summary="Report a data plane alive", tags=["data plane"],
           dataplane=True, response=DeploymentOut, idempotent=False)
def dataplane_heartbeat(call: Call) -> DeploymentOut:
    return DeploymentOut(**call.services.deployments.heartbeat(call.caller))
