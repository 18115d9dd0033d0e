"""The data-plane API: data planes connect out with their deployment's key."""

from __future__ import annotations

import flask

from functions.operation import Call, operation
from shared.deployments import DeploymentOut, DeploymentService, RegisterOut, RegisterRequest
from shared.kernel.errors import ErrorCode


def _deployments(call: Call) -> DeploymentService:
    return call.services.deployments


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


@operation("GET", "/dataplane/packages/{sha256}", summary="Download an agent package by its digest",
           tags=["data plane"], dataplane=True, media={"application/octet-stream": None},
           errors={404: ErrorCode.NOT_FOUND})
def get_package(call: Call) -> flask.Response:
    """The bytes of an approved version's package that a deployment of the caller's org runs; the
    data plane verifies their SHA-256 against the digest before it unpacks them."""
    sha256 = call.params["sha256"]
    data = _deployments(call).package_for_dataplane(call.caller, sha256)
    resp = flask.Response(data, status=200, mimetype="application/octet-stream")
    resp.headers["Cache-Control"] = "private, max-age=31536000, immutable"  # a digest names its bytes forever
    return resp
