"""The agent catalog and developer portal: listings, versions, search, reviews."""

from __future__ import annotations

from functions.operation import ANY_MEMBER, Call, Reply, operation
from shared.catalog import (
    AgentDetail,
    AgentSubmit,
    CatalogItem,
    CatalogQuery,
    CatalogSearch,
    CatalogService,
    DeveloperListing,
    ListQuery,
    PackageUploadOut,
    ReviewIn,
    ReviewOut,
    SubmitOut,
    VersionDetail,
    VersionSubmit,
    require_manifest,
)
from shared.kernel.errors import ErrorCode
from shared.kernel.package_archive import MAX_PACKAGE_BYTES
from shared.kernel.pagination import Page


def _catalog(call: Call) -> CatalogService:
    catalog: CatalogService = call.services.catalog  # typed here while Call.services is not
    return catalog


@operation("POST", "/agents", summary="Submit an agent listing", tags=["developer portal"], body=AgentSubmit,
           response=SubmitOut, status=201, errors={404: ErrorCode.NOT_FOUND, 409: ErrorCode.NAME_TAKEN,
                                                   422: ErrorCode.INVALID_MANIFEST})
def submit_agent(call: Call) -> SubmitOut:
    manifest = require_manifest(call.body.manifest, call.body.manifest_yaml)
    return _catalog(call).submit(call.caller, call.body.org_id, manifest)


@operation("POST", "/agents/{agent_id}/versions", summary="Submit a new agent version", tags=["developer portal"],
           body=VersionSubmit, response=SubmitOut, status=201,
           errors={409: (ErrorCode.VERSION_EXISTS, ErrorCode.VERSION_NOT_NEWER),
                   422: (ErrorCode.INVALID_MANIFEST, ErrorCode.NAME_MISMATCH)})
def submit_version(call: Call) -> SubmitOut:
    manifest = require_manifest(call.body.manifest, call.body.manifest_yaml)
    return _catalog(call).submit_version(call.caller, call.params["agent_id"], manifest)


_PACKAGE_ERRORS = (ErrorCode.PACKAGE_NOT_ARCHIVE, ErrorCode.PACKAGE_TOO_MANY_FILES, ErrorCode.PACKAGE_PATH_ESCAPES,
                   ErrorCode.PACKAGE_LINK, ErrorCode.PACKAGE_SPECIAL_FILE, ErrorCode.PACKAGE_NO_MANIFEST,
                   ErrorCode.PACKAGE_MANIFEST_MISMATCH, ErrorCode.INVALID_MANIFEST)


# The archive itself may be MAX_PACKAGE_BYTES; the slack lets one just over it reach the package
# check and its clear 413 ``package_too_large`` instead of the generic body limit.
@operation("PUT", "/agents/{agent_id}/versions/{version}/package", summary="Upload a version's code package",
           tags=["developer portal"], response=PackageUploadOut, status=201, max_body=MAX_PACKAGE_BYTES + 64 * 1024,
           accepts={"application/gzip": "a gzip'd tar of the agent project (sdist style)",
                    "application/zip": "a zip of the project, or a wheel",
                    "application/octet-stream": "either, recognised by its first bytes"},
           also={200: "The same package was uploaded before: nothing changed"},
           errors={403: ErrorCode.FORBIDDEN, 409: ErrorCode.PACKAGE_IMMUTABLE,
                   413: ErrorCode.PACKAGE_TOO_LARGE, 422: _PACKAGE_ERRORS})
def upload_package(call: Call) -> Reply:
    package, created = _catalog(call).upload_package(call.caller, call.params["agent_id"], call.params["version"],
                                                     call.raw_body)
    return Reply(body=package, status=201 if created else 200)


@operation("GET", "/developers/{org_id}/agents", summary="List the org's own listings", tags=["developer portal"],
           roles=ANY_MEMBER, query=ListQuery, response=Page[DeveloperListing])
def list_developer_agents(call: Call) -> Page[DeveloperListing]:
    return _catalog(call).developer_listings(call.org_id, limit=call.query.limit, cursor=call.query.cursor)


@operation("GET", "/agents", summary="Search the catalog", tags=["catalog"], query=CatalogQuery, anonymous=True,
           response=Page[CatalogItem], errors={400: ErrorCode.INVALID_CURSOR})
def search_agents(call: Call) -> Page[CatalogItem]:
    return _catalog(call).search(CatalogSearch(**call.query.model_dump()))


@operation("GET", "/agents/{agent_id}", summary="Read an agent listing", tags=["catalog"], response=AgentDetail,
           anonymous=True)
def get_agent(call: Call) -> AgentDetail:
    return _catalog(call).detail(call.principal, call.params["agent_id"])


@operation("GET", "/agents/{agent_id}/versions/{version}", summary="Read an agent version", tags=["catalog"],
           response=VersionDetail, anonymous=True)
def get_agent_version(call: Call) -> VersionDetail:
    return _catalog(call).version(call.principal, call.params["agent_id"], call.params["version"])


@operation("POST", "/agents/{agent_id}/reviews", summary="Review an installed agent", tags=["catalog"],
           body=ReviewIn, response=ReviewOut, status=201, also={200: "The org's earlier review, replaced"},
           errors={403: (ErrorCode.OWN_AGENT, ErrorCode.NOT_REVIEWABLE), 409: ErrorCode.CONFLICT})
def post_review(call: Call) -> Reply:
    review, created = _catalog(call).post_review(call.caller, call.params["agent_id"], call.body.org_id,
                                                 call.body.rating, call.body.text)
    return Reply(body=review, status=201 if created else 200)


@operation("GET", "/agents/{agent_id}/reviews", summary="List an agent's reviews", tags=["catalog"],
           query=ListQuery, response=Page[ReviewOut], anonymous=True)
def list_reviews(call: Call) -> Page[ReviewOut]:
    return _catalog(call).list_reviews(call.principal, call.params["agent_id"], limit=call.query.limit,
                                       cursor=call.query.cursor)
