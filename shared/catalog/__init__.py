"""The catalog context's public API: other contexts, operations and the data plane import from here only."""

from shared.catalog.manifest import AgentManifest, manifest_json_schema
from shared.catalog.models import (
    AgentDetail,
    AgentListing,
    AgentSubmit,
    ApproveBody,
    CatalogItem,
    CatalogQuery,
    DeveloperListing,
    ListQuery,
    ManifestInput,
    ManifestVerdictOut,
    RejectBody,
    ReviewIn,
    ReviewOut,
    SubmitOut,
    SuspendBody,
    VersionDetail,
    VersionSubmit,
)
from shared.catalog.search import CatalogSearch, catalog_words
from shared.catalog.semver import SemVer, SemVerError
from shared.catalog.service import (
    CatalogService,
    check_manifest,
    listing_fields,
    pricing_micros,
    require_manifest,
    verdict_body,
)

__all__ = [
    "AgentDetail",
    "AgentListing",
    "AgentManifest",
    "AgentSubmit",
    "ApproveBody",
    "CatalogItem",
    "CatalogQuery",
    "CatalogSearch",
    "CatalogService",
    "DeveloperListing",
    "ListQuery",
    "ManifestInput",
    "ManifestVerdictOut",
    "RejectBody",
    "ReviewIn",
    "ReviewOut",
    "SemVer",
    "SemVerError",
    "SubmitOut",
    "SuspendBody",
    "VersionDetail",
    "VersionSubmit",
    "catalog_words",
    "check_manifest",
    "listing_fields",
    "manifest_json_schema",
    "pricing_micros",
    "require_manifest",
    "verdict_body",
]
