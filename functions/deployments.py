"""Installing agents: deployments, upgrades with consent, and the BYOC bundle."""

from __future__ import annotations

from typing import Annotated, Literal

import flask
from pydantic import BaseModel, ConfigDict, Field

from functions.operation import ADMIN, ANY_MEMBER, Call, Reply, operation
from shared.deployments import (
    ConsentRequest,
    DeploymentOut,
    DeploymentService,
    DeploymentStatus,
    InstallOut,
    InstallRequest,
    UpgradeRequest,
)
from shared.identity import DEPLOYERS
from shared.kernel.errors import ErrorCode
from shared.kernel.pagination import Page


class DeploymentQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)
    status: DeploymentStatus | None = None


class BundleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cloud: Literal["gke", "eks", "aks"] = "gke"
    include_secret: Annotated[bool, Field(description=(
        "Embed a freshly issued data-plane key in clear (the previous key is revoked). "
        "By default the bundle only references a Kubernetes secret you create."))] = False


def _deployments(call: Call) -> DeploymentService:
    return call.services.deployments


@operation("POST", "/orgs/{org_id}/install", summary="Install an agent", tags=["deployments"], roles=DEPLOYERS,
           body=InstallRequest, response=InstallOut, status=201,
           errors={409: (ErrorCode.AGENT_SUSPENDED, ErrorCode.INVALID_STATE)})
def install_agent(call: Call) -> InstallOut:
    b = call.body
    return _deployments(call).install(call.caller, call.org_id, b.agent_id, version=b.version,
                                      deployment_type=b.deployment_type, config=b.config)


@operation("GET", "/orgs/{org_id}/deployments", summary="List deployments", tags=["deployments"],
           roles=ANY_MEMBER, query=DeploymentQuery, response=Page[DeploymentOut])
def list_deployments(call: Call) -> Page[DeploymentOut]:
    q = call.query
    return _deployments(call).page(call.org_id, limit=q.limit, cursor=q.cursor, status=q.status)


@operation("GET", "/orgs/{org_id}/deployments/{deployment_id}", summary="Read a deployment", tags=["deployments"],
           roles=ANY_MEMBER, response=DeploymentOut)
def get_deployment(call: Call) -> DeploymentOut:
    return _deployments(call).get(call.org_id, call.params["deployment_id"])


@operation("DELETE", "/orgs/{org_id}/deployments/{deployment_id}", summary="Uninstall a deployment",
           tags=["deployments"], roles=DEPLOYERS, response=DeploymentOut, errors={409: ErrorCode.INVALID_STATE})
def uninstall_deployment(call: Call) -> DeploymentOut:
    return _deployments(call).uninstall(call.caller, call.org_id, call.params["deployment_id"])


@operation("POST", "/orgs/{org_id}/deployments/{deployment_id}/upgrade", summary="Upgrade a deployment",
           tags=["deployments"], roles=DEPLOYERS, body=UpgradeRequest, response=DeploymentOut,
           errors={409: (ErrorCode.SAME_VERSION, ErrorCode.INVALID_STATE)},
           also={202: "Accepted: the new version asks for more permissions; an admin must consent"})
def upgrade_deployment(call: Call) -> Reply:
    out = _deployments(call).upgrade(call.caller, call.org_id, call.params["deployment_id"],
                                     call.body.version)
    waiting = out.status == DeploymentStatus.UPGRADE_PENDING_CONSENT
    return Reply(body=out, status=202 if waiting else 200)


@operation("POST", "/orgs/{org_id}/deployments/{deployment_id}/upgrade/consent",
           summary="Consent to (or refuse) an upgrade's new permissions", tags=["deployments"], roles=ADMIN,
           body=ConsentRequest, response=DeploymentOut, errors={409: ErrorCode.INVALID_STATE})
def consent_upgrade(call: Call) -> DeploymentOut:
    return _deployments(call).decide_upgrade(call.caller, call.org_id, call.params["deployment_id"],
                                             approve=call.body.approve, comment=call.body.comment)


@operation("GET", "/orgs/{org_id}/deployments/{deployment_id}/bundle", summary="Download the BYOC bundle",
           tags=["deployments"], roles=DEPLOYERS, query=BundleQuery, media={"application/gzip": None},
           errors={409: (ErrorCode.NOT_BYOC, ErrorCode.INVALID_STATE)})
def get_bundle(call: Call) -> flask.Response:
    bundle = _deployments(call).bundle(call.caller, call.org_id, call.params["deployment_id"],
                                       cloud=call.query.cloud, include_secret=call.query.include_secret)
    resp = flask.Response(bundle.data, status=200, mimetype="application/gzip")
    resp.headers["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
    return resp
