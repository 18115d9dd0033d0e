"""The data-plane API: data planes connect out with their deployment's key."""

from __future__ import annotations

from functions.operation import Call, operation
from shared.deployments import DeploymentOut, DeploymentService, RegisterOut, RegisterRequest
from shared.kernel.errors import ErrorCode


def _deployments(call: Call) -> DeploymentService:
    # Typed here until ``Call.services`` is the typed container.
    service: DeploymentService = call.services.deployments
    return service


@operation("POST", "/dataplanes/register", summary="Register a data plane", tags=["data plane"], dataplane=True,
           body=RegisterRequest, response=RegisterOut, idempotent=False,
           errors={404: ErrorCode.NOT_FOUND, 409: ErrorCode.INVALID_STATE})
def register_dataplane(call: Call) -> RegisterOut:
    b = call.body
    return _deployments(call).register(call.caller, version=b.version, hostname=b.hostname,
                                       capabilities=b.capabilities)


@operation("POST", "/dataplanes/heartbeat", summary="Report a data plane alive", tags=["data plane"],
           dataplane=True, response=DeploymentOut, idempotent=False,
           errors={404: ErrorCode.NOT_FOUND, 409: ErrorCode.INVALID_STATE})
def dataplane_heartbeat(call: Call) -> DeploymentOut:
    return _deployments(call).heartbeat(call.caller)
