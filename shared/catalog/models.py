"""Request and response bodies of the agent registry: developer portal, catalog, moderation, reviews."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.catalog.manifest import MAX_MANIFEST_BYTES, Category, DeploymentType, PricingModel
from shared.kernel.redacted import RedactOnInput

ListingStatus = Literal["pending_review", "approved", "rejected", "suspended"]
VersionStatus = Literal["pending_review", "approved", "rejected"]
CatalogSort = Literal["relevance", "rating", "installs", "newest"]

_Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]
_VersionText = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), RedactOnInput]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- developer portal ----------------------------------------------------------


class ManifestInput(_Body):
    """A manifest, either as a JSON object (``manifest``) or as YAML/JSON text (``manifest_yaml``)."""

    manifest: dict[str, Any] | None = None
    """The manifest as a JSON object."""
    manifest_yaml: Annotated[str, StringConstraints(max_length=MAX_MANIFEST_BYTES)] | None = None
    """The manifest document as text (YAML, or JSON text), e.g. the contents of manifest.yaml."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ManifestInput:
        if (self.manifest is None) == (self.manifest_yaml is None):
            raise ValueError("send exactly one of 'manifest' (a JSON object) or 'manifest_yaml' (text)")
        return self


class AgentSubmit(ManifestInput):
    """``POST /agents``: a new listing published by ``org_id`` with its first version."""

    org_id: _Id
    """The publishing org; the caller must be one of its admins or developers."""


class VersionSubmit(ManifestInput):
    """``POST /agents/{agent_id}/versions``: a later version of the listing."""


class ManifestProblemOut(BaseModel):
    path: str
    message: str


class PricingMicros(BaseModel):
    """A price list in integer micro-dollars (1 USD = 1,000,000)."""

    base_micros: int
    per_record_micros: int
    per_cpu_hour_micros: int
    subscription_monthly_micros: int


class ManifestVerdictOut(BaseModel):
    """The outcome of ``POST /manifests/validate``."""

    valid: bool
    problems: list[ManifestProblemOut]
    manifest: dict[str, Any] | None = None
    """The normalized manifest (defaults filled in) when valid."""
    pricing_model: PricingModel | None = None
    pricing_micros: PricingMicros | None = None


# -- listings ------------------------------------------------------------------


class PermissionDiffOut(BaseModel):
    """Permissions of a version compared with the version below it."""

    previous_version: str | None
    added: list[str]
    removed: list[str]
    unchanged: list[str]
    needs_consent: bool


class VersionOut(BaseModel):
    agent_id: str
    version: str
    status: VersionStatus
    permission_diff: PermissionDiffOut
    created_at: datetime
    reviewed_at: datetime | None = None
    review_reason: str | None = None


class PackageOut(BaseModel):
    """A version's code package (issue 14): which bytes, by digest; fetched by data planes from
    ``GET /dataplane/packages/{sha256}``."""

    sha256: str = Field(description="SHA-256 of the archive, lowercase hex: its name in the artifact store.")
    size: int = Field(description="The archive's size in bytes.")
    kind: Literal["tar.gz", "zip"]


class PackageUploadOut(PackageOut):
    """``PUT /agents/{agent_id}/versions/{version}/package``: the package now on the version."""

    agent_id: str
    version: str


class VersionDetail(VersionOut):
    manifest: dict[str, Any]
    package: PackageOut | None = None
    """The version's code package, or null (built-in agents, or an agent that names ``runtime.image``)."""


class AgentListing(BaseModel):
    """A catalog listing; its display fields come from its latest approved version."""

    id: str
    name: str
    publisher_org_id: str
    publisher_name: str
    display_name: str
    description: str
    category: Category
    tags: list[str]
    pricing_model: PricingModel
    pricing: PricingMicros
    deployment_types: list[DeploymentType]
    install_count: int
    rating_avg: float
    rating_count: int
    status: ListingStatus
    status_reason: str | None = None
    latest_version: str | None = None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None = None


class CatalogItem(AgentListing):
    score: float | None = None
    """Relevance to ``q`` (higher is better); null without a query."""


class DeveloperListing(AgentListing):
    pending_versions: list[str]


class SubmitOut(BaseModel):
    listing: AgentListing
    version: VersionOut


class RatingSummary(BaseModel):
    avg: float
    count: int
    distribution: dict[str, int]
    """Reviews per star, "1" to "5"."""


class AgentDetail(BaseModel):
    listing: AgentListing
    manifest: dict[str, Any] | None
    """The latest approved version's manifest (its publisher also sees an unapproved one)."""
    versions: list[VersionOut]
    """Newest first; outside the publisher org only approved versions."""
    rating: RatingSummary


class CatalogQuery(_Body):
    """``GET /agents`` parameters."""

    q: Annotated[str, StringConstraints(max_length=200)] | None = None
    category: Category | None = None
    pricing_model: PricingModel | None = None
    deployment_type: DeploymentType | None = None
    min_rating: Annotated[Decimal, Field(ge=0, le=5, max_digits=3, decimal_places=2)] | None = None
    sort: CatalogSort | None = None
    """Default: relevance with ``q``, installs without."""
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Annotated[str, StringConstraints(max_length=2048)] | None = None


class ListQuery(_Body):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(max_length=512)] | None = None


# -- moderation ------------------------------------------------------------------


class ApproveBody(_Body):
    version: _VersionText | None = None
    """The pending version to approve (default: the highest pending one)."""
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None


class RejectBody(_Body):
    reason: _Reason
    version: _VersionText | None = None
    """The pending version to reject (default: the highest pending one)."""


class SuspendBody(_Body):
    reason: _Reason


# -- reviews -------------------------------------------------------------------------


class ReviewIn(_Body):
    org_id: _Id
    """The reviewing org: it must have installed the agent; the caller must be a non-viewer member."""
    rating: Annotated[int, Field(strict=True, ge=1, le=5)]
    text: Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)] = ""


class ReviewOut(BaseModel):
    id: str
    agent_id: str
    org_id: str
    org_name: str
    rating: int
    text: str
    created_at: datetime
    updated_at: datetime
