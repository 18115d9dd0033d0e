"""The agent registry: listings and their immutable versions, moderation, reviews (search: search.py).

A listing's display fields (name, description, category, tags, pricing, deployment types) are
copied from one of its versions, so they are versioned and reviewed with the manifest: the
latest approved version, or — while none is approved — the highest submitted one. Only approved
listings are in the public catalog; the publisher org's members and platform admins see the rest.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.audit import AuditLog
from shared.catalog.manifest import (
    MAX_MANIFEST_BYTES,
    AgentManifest,
    ManifestInvalid,
    ManifestProblem,
    ManifestVerdict,
    load_manifest,
    parse_manifest_document,
    permission_diff,
    validate_manifest_data,
)
from shared.catalog.models import (
    AgentDetail,
    AgentListing,
    CatalogItem,
    DeveloperListing,
    ManifestVerdictOut,
    PackageOut,
    PackageUploadOut,
    RatingSummary,
    ReviewOut,
    SubmitOut,
    VersionDetail,
    VersionOut,
)
from shared.catalog.ports import ArtifactStore, InstallHistory
from shared.catalog.rows import (
    developer_listing_of,
    listing_of,
    package_of,
    review_of,
    version_detail_of,
    version_of,
)
from shared.catalog.search import CatalogSearch, CatalogSearcher, catalog_words
from shared.catalog.semver import SemVer
from shared.identity import ORG_NOT_FOUND, PUBLISHERS, REVIEWERS, OrgService, Principal, Role
from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, Forbidden, NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.package_archive import PackageInfo, inspect_package
from shared.kernel.pagination import Keyset, Page, next_page

_log = logging.getLogger(__name__)

PLATFORM_USER_EMAIL = "platform@marketplace.local"
"""The system user that owns the platform org and publishes the built-in agents."""
PLATFORM_ORG_NAME = "Agent Marketplace"
"""The org under which the built-in agents are published."""

_SEED_LOCK = 0x6D6B7473  # "mkts": one seeding process at a time

_Q = Queries("shared.catalog")

# -- manifest checking (no side effects) -------------------------------------------


def check_manifest(manifest: dict[str, Any] | None = None, manifest_yaml: str | None = None) -> ManifestVerdict:
    """Validate a manifest given as a parsed object or as YAML/JSON text; never raises for bad input."""
    try:
        if manifest_yaml is not None:
            data: object = parse_manifest_document(manifest_yaml)
        else:
            data = manifest
            size = len(json.dumps(manifest, ensure_ascii=False, default=str).encode())
            if size > MAX_MANIFEST_BYTES:
                return ManifestVerdict(None, [ManifestProblem(
                    path="", message=f"is {size:,} bytes; a manifest may be at most {MAX_MANIFEST_BYTES:,} bytes")])
    except ManifestInvalid as exc:
        return ManifestVerdict(None, exc.problems)
    return validate_manifest_data(data)


def pricing_micros(manifest: AgentManifest) -> dict[str, int]:
    """The manifest's price list in integer micro-dollars."""
    p = manifest.pricing
    return {"base_micros": p.base_micros, "per_record_micros": p.per_record_micros,
            "per_cpu_hour_micros": p.per_cpu_hour_micros,
            "subscription_monthly_micros": p.subscription_monthly_micros}


def verdict_out(verdict: ManifestVerdict) -> ManifestVerdictOut:
    """The verdict as ``POST /manifests/validate`` answers it (and ``marketplace manifest validate``
    prints it)."""
    m = verdict.manifest
    return ManifestVerdictOut.model_validate({
        "valid": verdict.ok,
        "problems": [dict(p) for p in verdict.problems],
        "manifest": m.model_dump(mode="json") if m else None,
        "pricing_model": m.pricing.pricing_model.value if m else None,
        "pricing_micros": pricing_micros(m) if m else None,
    })


def manifest_verdict(manifest: dict[str, Any] | None = None, manifest_yaml: str | None = None
                     ) -> ManifestVerdictOut:
    """Validate a manifest (object or text) and say what is wrong with it; never raises for bad input."""
    return verdict_out(check_manifest(manifest, manifest_yaml))


def require_manifest(manifest: dict[str, Any] | None, manifest_yaml: str | None, *,
                     field_name: str = "manifest") -> AgentManifest:
    """The validated manifest, or a 422 listing every problem with its path under ``field_name``."""
    verdict = check_manifest(manifest, manifest_yaml)
    if verdict.manifest is not None:
        return verdict.manifest
    prefix = field_name if manifest is not None else "manifest_yaml"
    details = [{"path": f"{prefix}.{p['path']}" if p["path"] else prefix, "message": p["message"]}
               for p in verdict.problems]
    listed = "; ".join(f"{d['path']}: {d['message']}" for d in details)
    raise Unprocessable(f"invalid agent manifest: {listed}", details=details, code=ErrorCode.INVALID_MANIFEST)


# -- small pure helpers ----------------------------------------------------------------


def latest_of(versions: Iterable[str]) -> str | None:
    """The highest release; pre-releases only when there is no release at all."""
    parsed = [SemVer.parse(v) for v in versions]
    releases = [v for v in parsed if not v.is_prerelease]
    pool = releases or parsed
    return str(max(pool)) if pool else None


def _diff_json(previous: AgentManifest | None, previous_version: str | None, new: AgentManifest) -> dict[str, Any]:
    diff = permission_diff(previous, new)
    return {"previous_version": previous_version, "added": list(diff.added), "removed": list(diff.removed),
            "unchanged": list(diff.unchanged), "needs_consent": diff.needs_consent}


@dataclass(frozen=True)
class ListingFields:
    """The listing columns copied from a manifest (``pricing`` as JSON text, for a jsonb parameter)."""

    display_name: str
    description: str
    category: str
    tags: list[str]
    pricing_model: str
    pricing: str
    deployment_types: list[str]

    def params(self) -> tuple[Any, ...]:
        """The columns in the order ``insert_listing`` and ``refresh_listing`` take them."""
        return (self.display_name, self.description, self.category, self.tags, self.pricing_model, self.pricing,
                self.deployment_types)


def listing_fields(manifest: AgentManifest) -> ListingFields:
    """What a listing shows of ``manifest``."""
    return ListingFields(
        display_name=manifest.display_name,
        description=manifest.description,
        category=manifest.category.value,
        tags=list(manifest.tags),
        pricing_model=manifest.pricing.pricing_model.value,
        pricing=json.dumps(pricing_micros(manifest)),
        deployment_types=[d.value for d in manifest.deployment],
    )


@functools.cache
def _listing_sql(column: str, lock: bool) -> str:
    """The ``listing`` (or, to lock it, ``listing_for_update``) statement by ``column`` ("id" or "name")."""
    return (_Q.listing_for_update if lock else _Q.listing).format(column=column)


@dataclass
class SeedReport:
    """What ``publish_builtin_agents`` did, by agent name."""

    published: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in (
            ("published", self.published), ("new version of", self.updated), ("unchanged", self.unchanged),
            ("skipped", self.skipped)) if names]
        return "; ".join(parts) or "no built-in agents found"


class CatalogService:
    """Every mutation writes its audit entry, in the publisher org's chain, in the same transaction."""

    def __init__(self, db: Database, audit: AuditLog, orgs: OrgService, *,
                 builtin_agents_dir: Path | None = None, artifacts: ArtifactStore | None = None) -> None:
        self.db = db
        self.audit = audit
        self.orgs = orgs
        self.builtin_agents_dir = builtin_agents_dir
        self.artifacts = artifacts
        self.searcher = CatalogSearcher(db)
        self._installs: InstallHistory | None = None

    def use_install_history(self, installs: InstallHistory) -> None:
        """Connect the install history that reviews need. Its owner (deployments) sits above the
        catalog and is built with it, so the composition root connects it afterwards."""
        self._installs = installs

    # -- access ------------------------------------------------------------------------
    def _publisher_role(self, principal: Principal, org_id: str, *, unknown: str = ORG_NOT_FOUND) -> Role:
        """The caller's role in ``org_id`` when it may publish in the org's name (identity decides;
        a non-member gets the 404 ``unknown``)."""
        return self.orgs.authorize(principal, org_id, PUBLISHERS, doing="publish agents in the organisation's name",
                                   unknown=unknown)

    def _privileged(self, principal: Principal | None, listing: AgentListing) -> bool:
        """May ``principal`` see this listing whatever its status (publisher member or platform admin)?"""
        return self.orgs.sees_everything_of(principal, listing.publisher_org_id)

    @staticmethod
    def _find(tx: Tx, agent_id: str, *, lock: bool = False, by_name: bool = True) -> AgentListing | None:
        # Names are slugs ([a-z0-9-]) and ids carry an "agt_" prefix, so either identifies a listing.
        if not agent_id.startswith("agt_") and not by_name:
            return None
        row = tx.fetch_one(_listing_sql("id" if agent_id.startswith("agt_") else "name", lock), agent_id)
        return None if row is None else listing_of(row)

    def _visible(self, tx: Tx, principal: Principal | None, agent_id: str, *, lock: bool = False
                 ) -> tuple[AgentListing, bool]:
        """The listing and whether the caller is privileged; 404 for unpublished ones outside the publisher."""
        listing = self._find(tx, agent_id, lock=lock)
        if listing is None:
            raise NotFound("agent not found")
        privileged = self._privileged(principal, listing)
        if listing.status != "approved" and not privileged:
            raise NotFound("agent not found")
        return listing, privileged

    # -- developer portal ----------------------------------------------------------------
    def submit(self, principal: Principal, org_id: str, manifest: AgentManifest) -> SubmitOut:
        """A new listing with its first version, both ``pending_review``."""
        self._publisher_role(principal, org_id)
        with self.db.transaction() as tx:
            listing, version = self._create_listing(tx, principal.actor, org_id, manifest)
        return SubmitOut(listing=listing, version=version)

    @staticmethod
    def _name_taken(name: str) -> Conflict:
        return Conflict(f"an agent named {name!r} already exists; names are unique across the marketplace",
                        code=ErrorCode.NAME_TAKEN, details=[{"path": "manifest.name", "message": "is already taken"}])

    def _create_listing(self, tx: Tx, actor: str, org_id: str, manifest: AgentManifest
                        ) -> tuple[AgentListing, VersionOut]:
        publisher_name = self.orgs.org_name(tx, org_id)
        if publisher_name is None:
            raise NotFound(ORG_NOT_FOUND)
        agent_id = tx.fetch_val(_Q.insert_listing, new_id("agt"), manifest.name, org_id, publisher_name,
                                *listing_fields(manifest).params(), actor)
        if agent_id is None:
            raise self._name_taken(manifest.name)
        version = self._insert_version(tx, agent_id, actor, manifest, previous=None, previous_version=None)
        self._add_terms(tx, manifest, publisher_name)
        self.audit.append(tx, org_id=org_id, actor=actor, action="agent.submitted", target=agent_id,
                          details={"name": manifest.name, "version": manifest.version})
        listing = self._find(tx, agent_id)
        assert listing is not None
        return listing, version

    @staticmethod
    def _insert_version(tx: Tx, agent_id: str, actor: str, manifest: AgentManifest, *,
                        previous: AgentManifest | None, previous_version: str | None) -> VersionOut:
        row = tx.fetch_one(_Q.insert_version, agent_id, manifest.version,
                           json.dumps(manifest.model_dump(mode="json")),
                           json.dumps(_diff_json(previous, previous_version, manifest)), actor)
        assert row is not None
        return version_of(row)

    @staticmethod
    def _add_terms(tx: Tx, manifest: AgentManifest, publisher_name: str) -> None:
        words = catalog_words(manifest.name.replace("-", " "), manifest.display_name, manifest.description,
                              " ".join(manifest.tags), manifest.category.value, publisher_name)
        tx.execute(_Q.add_terms, words)

    def submit_version(self, principal: Principal, agent_id: str, manifest: AgentManifest) -> SubmitOut:
        """A later version: a higher semver than every existing one, same ``name``; ``pending_review``."""
        with self.db.transaction() as tx:
            listing = self._find(tx, agent_id, lock=True)
            if listing is None:
                raise NotFound("agent not found")
            self._publisher_role(principal, listing.publisher_org_id, unknown="agent not found")
            if manifest.name != listing.name:
                raise Unprocessable(
                    f"the manifest's name {manifest.name!r} does not match this agent ({listing.name!r}); "
                    "a listing's name never changes", code=ErrorCode.NAME_MISMATCH,
                    details=[{"path": "manifest.name", "message": f"must be {listing.name!r}"}])
            existing = tx.fetch_all(_Q.version_manifests, listing.id)
            new = manifest.semver
            parsed = {row["version"]: SemVer.parse(row["version"]) for row in existing}
            for text, old in parsed.items():
                if old == new:
                    raise Conflict(f"version {text} already exists; versions are immutable, publish a new one",
                                   code=ErrorCode.VERSION_EXISTS,
                                   details=[{"path": "manifest.version", "message": f"{text} already exists"}])
            highest = max(parsed, key=lambda v: parsed[v])
            if new < parsed[highest]:
                raise Conflict(f"version {manifest.version} is lower than the existing version {highest}; "
                               "a new version must be higher than every earlier one", code=ErrorCode.VERSION_NOT_NEWER,
                               details=[{"path": "manifest.version", "message": f"must be higher than {highest}"}])
            previous = AgentManifest.model_validate(next(r["manifest"] for r in existing if r["version"] == highest))
            version = self._insert_version(tx, listing.id, principal.actor, manifest, previous=previous,
                                           previous_version=highest)
            if listing.status == "rejected":
                # A rejected listing goes back into review with its new version.
                tx.execute(_Q.reopen_listing, listing.id)
            self._refresh_listing(tx, listing.id, listing.publisher_org_id)
            self._add_terms(tx, manifest, listing.publisher_name)
            self.audit.append(tx, org_id=listing.publisher_org_id, actor=principal.actor,
                              action="agent.version_submitted", target=listing.id,
                              details={"name": listing.name, "version": manifest.version,
                                       "permissions_added": version.permission_diff.added,
                                       "permissions_removed": version.permission_diff.removed})
            updated = self._find(tx, listing.id)
        assert updated is not None
        return SubmitOut(listing=updated, version=version)

    def _refresh_listing(self, tx: Tx, agent_id: str, publisher_org_id: str) -> None:
        """Copy the display fields from the latest approved version (or the highest one while none is)."""
        versions = tx.fetch_all(_Q.version_manifests, agent_id)
        latest = latest_of(r["version"] for r in versions if r["status"] == "approved")
        shown = latest or max((r["version"] for r in versions), key=SemVer.parse)
        manifest = AgentManifest.model_validate(next(r["manifest"] for r in versions if r["version"] == shown))
        tx.execute(_Q.refresh_listing, *listing_fields(manifest).params(), latest,
                   self.orgs.org_name(tx, publisher_org_id), agent_id)

    def developer_listings(self, org_id: str, *, limit: int, cursor: str | None) -> Page[DeveloperListing]:
        """The org's own listings in every status, newest first."""
        after = Keyset.after(cursor)
        with self.db.read() as tx:
            found = tx.fetch_all(_Q.developer_listings, org_id, *after.params, limit + 1)
        items, next_cursor = next_page([developer_listing_of(row) for row in found], limit,
                                       lambda item: Keyset.of(item.created_at, item.id))
        return Page[DeveloperListing](items=items, next_cursor=next_cursor)

    # -- agent packages (issue 14) -------------------------------------------------------------
    def upload_package(self, principal: Principal, agent_id: str, version: str, data: bytes
                       ) -> tuple[PackageUploadOut, bool]:
        """Attach a code package to a version; returns (package, created).

        Checked before any byte is stored: the caller may publish for the listing's org, the version
        exists, the archive passes ``inspect_package``, and its ``manifest.yaml`` is this version's
        (same name and version, valid, and the same manifest once normalised). A package is set
        once: the same bytes again answer as before, other bytes (or a first package on a version
        already reviewed) are a 409 ``package_immutable``.
        """
        artifacts = self._require_artifacts()
        with self.db.read() as tx:
            listing = self._find(tx, agent_id)
            if listing is None:
                raise NotFound("agent not found")
            self._publisher_role(principal, listing.publisher_org_id, unknown="agent not found")
            state = tx.fetch_one(_Q.version_package_state, listing.id, version)
        if state is None:
            raise NotFound(f"version {version} not found")
        info = inspect_package(data)
        self._check_package_manifest(info, listing.name, version, state["manifest"])
        out = PackageUploadOut(agent_id=listing.id, version=version, sha256=info.sha256, size=info.size,
                               kind=info.kind)
        if self._already_packaged(state, version, info):
            if not artifacts.exists(info.sha256):  # recorded, but lost from the store: put it back
                artifacts.put(data)
            return out, False
        artifacts.put(data)  # outside the transaction: an upload to Cloud Storage takes a while
        with self.db.transaction() as tx:
            locked = tx.fetch_one(_Q.version_package_for_update, listing.id, version)
            assert locked is not None, "versions are never deleted"
            if self._already_packaged(locked, version, info):  # a concurrent upload of the same bytes
                return out, False
            tx.execute(_Q.set_version_package, info.sha256, info.size, info.kind, listing.id, version)
            self.audit.append(tx, org_id=listing.publisher_org_id, actor=principal.actor,
                              action="agent.package_uploaded", target=listing.id,
                              details={"name": listing.name, "version": version, "sha256": info.sha256,
                                       "size": info.size, "kind": info.kind})
        return out, True

    def _require_artifacts(self) -> ArtifactStore:
        if self.artifacts is None:
            raise RuntimeError("the catalog has no artifact store: pass artifacts= when wiring it")
        return self.artifacts

    @staticmethod
    def _already_packaged(state: dict[str, Any], version: str, info: PackageInfo) -> bool:
        """True when the version carries these very bytes; a Conflict when it carries others or
        can no longer take one; False when the package may be set."""
        existing = package_of(state)
        if existing is not None:
            if existing.sha256 == info.sha256:
                return True
            raise Conflict(f"version {version} already has a package (sha256 {existing.sha256}); packages are "
                           "immutable, publish a new version", code=ErrorCode.PACKAGE_IMMUTABLE)
        if state["status"] != "pending_review":
            raise Conflict(f"version {version} is already {state['status']}: a package can only be added while "
                           "the version waits for review", code=ErrorCode.PACKAGE_IMMUTABLE)
        return False

    @staticmethod
    def _check_package_manifest(info: PackageInfo, name: str, version: str, version_manifest: dict[str, Any]
                                ) -> None:
        where = f"{info.root}/manifest.yaml" if info.root else "manifest.yaml"
        mismatched = [{"path": f"{where}.{key}", "message": f"is {info.manifest.get(key)!r}, must be {want!r}"}
                      for key, want in (("name", name), ("version", version))
                      if str(info.manifest.get(key)) != want]
        if mismatched:
            raise Unprocessable(f"the package's {where} is not version {version} of {name}",
                                code=ErrorCode.PACKAGE_MANIFEST_MISMATCH, details=mismatched)
        verdict = check_manifest(manifest_yaml=info.manifest_text)
        if verdict.manifest is None:
            details = [{"path": f"{where}.{p['path']}" if p["path"] else where, "message": p["message"]}
                       for p in verdict.problems]
            raise Unprocessable(f"the package's {where} is not a valid manifest", code=ErrorCode.INVALID_MANIFEST,
                                details=details)
        normalised = verdict.manifest.model_dump(mode="json")
        differ = sorted(k for k in normalised.keys() | version_manifest.keys()
                        if normalised.get(k) != version_manifest.get(k))
        if differ:
            # The version was reviewed with its manifest: the package may not declare anything else.
            raise Unprocessable(f"the package's {where} differs from the manifest submitted for version {version}",
                                code=ErrorCode.PACKAGE_MANIFEST_MISMATCH,
                                details=[{"path": f"{where}.{k}", "message": "differs from the version's manifest"}
                                         for k in differ])

    # -- moderation (platform admins; the decorator checks) --------------------------------
    def approve(self, principal: Principal, agent_id: str, version: str | None = None,
                note: str | None = None) -> AgentListing:
        """Approve a pending version (default: the highest) and publish the listing.

        On a suspended listing with nothing pending, approving reinstates it.
        """
        with self.db.transaction() as tx:
            listing = self._find(tx, agent_id, lock=True)
            if listing is None:
                raise NotFound("agent not found")
            target = self._pending_version(tx, listing.id, version, required=False)
            if target is None and listing.status == "approved":
                raise Conflict("this agent has no version pending review", code=ErrorCode.NOTHING_PENDING)
            if target is None and listing.latest_version is None:
                raise Conflict("this agent has no version to approve", code=ErrorCode.NOTHING_PENDING)
            if target is not None:
                tx.execute(_Q.approve_version, principal.actor, note, listing.id, target)
            self._refresh_listing(tx, listing.id, listing.publisher_org_id)
            tx.execute(_Q.publish_listing, listing.id)
            action = ("agent.reinstated" if target is None else
                      "agent.approved" if listing.status != "approved" else "agent.version_approved")
            self.audit.append(tx, org_id=listing.publisher_org_id, actor=principal.actor, action=action,
                              target=listing.id, details={"name": listing.name, "version": target,
                                                          "previous_status": listing.status, "note": note})
            updated = self._find(tx, listing.id)
        assert updated is not None
        return updated

    def reject(self, principal: Principal, agent_id: str, reason: str, version: str | None = None) -> AgentListing:
        """Reject a pending version (default: the highest); a never-approved listing is rejected with it."""
        with self.db.transaction() as tx:
            listing = self._find(tx, agent_id, lock=True)
            if listing is None:
                raise NotFound("agent not found")
            target = self._pending_version(tx, listing.id, version, required=True)
            tx.execute(_Q.reject_version, principal.actor, reason, listing.id, target)
            if (listing.status == "pending_review" and listing.latest_version is None
                    and not tx.fetch_val(_Q.pending_version_count, listing.id)):
                tx.execute(_Q.reject_listing, reason, listing.id)
            self._refresh_listing(tx, listing.id, listing.publisher_org_id)
            updated = self._find(tx, listing.id)
            assert updated is not None
            self.audit.append(tx, org_id=listing.publisher_org_id, actor=principal.actor,
                              action="agent.rejected" if updated.status == "rejected" else "agent.version_rejected",
                              target=listing.id, details={"name": listing.name, "version": target, "reason": reason})
        return updated

    def suspend(self, principal: Principal, agent_id: str, reason: str) -> AgentListing:
        """Hide the listing from the catalog and refuse new installs of any of its versions."""
        with self.db.transaction() as tx:
            listing = self._find(tx, agent_id, lock=True)
            if listing is None:
                raise NotFound("agent not found")
            if listing.status == "suspended":
                raise Conflict("this agent is already suspended", code=ErrorCode.ALREADY_SUSPENDED)
            tx.execute(_Q.suspend_listing, reason, listing.id)
            self.audit.append(tx, org_id=listing.publisher_org_id, actor=principal.actor,
                              action="agent.suspended", target=listing.id,
                              details={"name": listing.name, "reason": reason, "previous_status": listing.status})
            updated = self._find(tx, listing.id)
        assert updated is not None
        return updated

    @staticmethod
    def _pending_version(tx: Tx, agent_id: str, version: str | None, *, required: bool) -> str | None:
        versions = tx.fetch_all(_Q.version_statuses, agent_id)
        if version is not None:
            match = next((r for r in versions if r["version"] == version), None)
            if match is None:
                raise NotFound(f"version {version} not found")
            if match["status"] != "pending_review":
                raise Conflict(f"version {version} is already {match['status']}", code=ErrorCode.NOT_PENDING)
            return version
        pending = [str(r["version"]) for r in versions if r["status"] == "pending_review"]
        if not pending:
            if required:
                raise Conflict("this agent has no version pending review", code=ErrorCode.NOTHING_PENDING)
            return None
        return max(pending, key=SemVer.parse)

    # -- install flow -------------------------------------------------------------------------
    def installable_version(self, agent_id: str, version: str | None = None, *, tx: Tx | None = None
                            ) -> AgentManifest:
        """The manifest to install: an approved version (default: latest) of an approved listing.

        ``agent_id`` must be the listing id (``agt_...``), never its name: the caller stores it as the
        deployment's foreign key. NotFound for an unknown or unpublished listing or version;
        Conflict for a suspended listing. Pass ``tx`` to read inside the install's own transaction.
        """
        if tx is None:
            with self.db.transaction() as own:
                return self.installable_version(agent_id, version, tx=own)
        listing = self._find(tx, agent_id, by_name=False)
        if listing is None or listing.status in ("pending_review", "rejected"):
            raise NotFound("agent not found; install an agent by its id (agt_...)",
                           details=[{"path": "agent_id", "message": "no such published agent id"}])
        if listing.status == "suspended":
            raise Conflict("this agent is suspended and cannot be installed", code=ErrorCode.AGENT_SUSPENDED)
        wanted = version or listing.latest_version
        found = tx.fetch_val(_Q.approved_version_manifest, listing.id, wanted)
        if found is None:
            raise NotFound(f"version {wanted} of {listing.name} is not available",
                           details=[{"path": "version", "message": "no such approved version"}])
        return AgentManifest.model_validate(found)

    @staticmethod
    def adjust_install_count(tx: Tx, agent_id: str, delta: int) -> None:
        """Count an install (+1) or an uninstall (-1), inside the install flow's transaction."""
        tx.execute(_Q.adjust_install_count, delta, agent_id)

    # -- catalog ---------------------------------------------------------------------------------
    def search(self, params: CatalogSearch) -> Page[CatalogItem]:
        """One page of the public catalog (see :class:`CatalogSearcher`)."""
        return self.searcher.search(params)

    def explain_search(self, params: CatalogSearch) -> str:
        """The query plans of a search (for the benchmark)."""
        return self.searcher.explain_search(params)

    def detail(self, principal: Principal | None, agent_id: str) -> AgentDetail:
        """The listing, its shown manifest, its versions (newest first) and its rating summary."""
        with self.db.transaction() as tx:
            listing, privileged = self._visible(tx, principal, agent_id)
            versions = tx.fetch_all(_Q.versions_with_manifests, listing.id)
            stars = tx.fetch_all(_Q.rating_distribution, listing.id)
        shown_versions = [v for v in versions if privileged or v["status"] == "approved"]
        shown_versions.sort(key=lambda v: SemVer.parse(v["version"]), reverse=True)
        shown = listing.latest_version or (shown_versions[0]["version"] if shown_versions else None)
        manifest = next((v["manifest"] for v in versions if v["version"] == shown), None)
        distribution = {str(star): 0 for star in range(1, 6)}
        for row in stars:
            distribution[str(row["rating"])] = int(row["n"])
        return AgentDetail(
            listing=listing,
            manifest=manifest,
            versions=[version_of(row) for row in shown_versions],
            rating=RatingSummary(avg=listing.rating_avg, count=listing.rating_count, distribution=distribution),
        )

    def version(self, principal: Principal | None, agent_id: str, version: str) -> VersionDetail:
        """One version with its manifest; outside the publisher org only approved versions exist."""
        with self.db.transaction() as tx:
            listing, privileged = self._visible(tx, principal, agent_id)
            row = tx.fetch_one(_Q.version_detail, listing.id, version)
        if row is None or (row["status"] != "approved" and not privileged):
            raise NotFound(f"version {version} not found")
        return version_detail_of(row)

    # -- reviews ----------------------------------------------------------------------------------
    def post_review(self, principal: Principal, agent_id: str, org_id: str, rating: int, text: str
                    ) -> tuple[ReviewOut, bool]:
        """Create or replace ``org_id``'s review of the agent; returns (review, created)."""
        self.orgs.authorize(principal, org_id, REVIEWERS, doing="review agents on behalf of the organisation")
        if self._installs is None:
            raise RuntimeError("the catalog has no install history: call use_install_history() when wiring it")
        with self.db.transaction() as tx:
            # The listing row lock serialises reviews of one agent, so the recomputed aggregate
            # always includes every committed review.
            listing, _ = self._visible(tx, principal, agent_id, lock=True)
            if listing.status != "approved":
                raise Conflict(f"this agent is {listing.status.replace('_', ' ')} and cannot be reviewed",
                               code=ErrorCode.NOT_REVIEWABLE)
            if listing.publisher_org_id == org_id:
                raise Forbidden("a publisher cannot review its own agent", code=ErrorCode.OWN_AGENT)
            if not self._installs.has_installed(tx, org_id, listing.id):
                raise Forbidden("only organisations that installed this agent may review it",
                                code=ErrorCode.NOT_INSTALLED)
            org_name = self.orgs.org_name(tx, org_id)
            if org_name is None:
                raise NotFound(ORG_NOT_FOUND)
            row = tx.fetch_one(_Q.upsert_review, listing.id, org_id, new_id("rev"), rating, text, principal.actor)
            assert row is not None
            tx.execute(_Q.refresh_rating, listing.id, listing.id)
            created = bool(row.pop("created"))
            self.audit.append(tx, org_id=org_id, actor=principal.actor,
                              action="review.created" if created else "review.updated", target=listing.id,
                              details={"agent": listing.name, "review_id": row["id"], "rating": rating})
        return review_of(row, org_name), created

    def list_reviews(self, principal: Principal | None, agent_id: str, *, limit: int, cursor: str | None
                     ) -> Page[ReviewOut]:
        """Reviews of a visible agent, newest first."""
        after = Keyset.after(cursor)
        with self.db.transaction() as tx:
            listing, _ = self._visible(tx, principal, agent_id)
            found = tx.fetch_all(_Q.reviews, listing.id, *after.params, limit + 1)
            page, next_cursor = next_page(found, limit, lambda row: Keyset.of(row["created_at"], row["id"]))
            names = self.orgs.org_names(tx, sorted({row["org_id"] for row in page}))
        return Page[ReviewOut](items=[review_of(row, names[row["org_id"]]) for row in page if row["org_id"] in names],
                               next_cursor=next_cursor)

    # -- built-in agents ----------------------------------------------------------------------------
    def builtin_manifests(self) -> list[tuple[Path, AgentManifest]]:
        """Every ``*/manifest.yaml`` under the built-in agents directory, validated."""
        if self.builtin_agents_dir is None or not self.builtin_agents_dir.is_dir():
            return []
        found = []
        for path in sorted(self.builtin_agents_dir.glob("*/manifest.yaml")):
            try:
                found.append((path, load_manifest(path.read_bytes(), "yaml")))
            except ManifestInvalid as exc:
                # A broken built-in manifest is a bug in this repository: fail loudly at startup.
                raise RuntimeError(f"{path}: {exc}") from exc
        return found

    def publish_builtin_agents(self) -> SeedReport:
        """Publish (approved) every built-in agent under the platform org; safe to run at every start."""
        report = SeedReport()
        manifests = self.builtin_manifests()
        if not manifests:
            return report
        with self.db.transaction() as tx:
            tx.execute(_Q.seed_lock, _SEED_LOCK)
            org_id, actor = self.orgs.ensure_system_org(tx, PLATFORM_USER_EMAIL, PLATFORM_ORG_NAME)
            for path, manifest in manifests:
                listing = self._find(tx, manifest.name, lock=True)
                if listing is None:
                    created, _ = self._create_listing(tx, actor, org_id, manifest)
                    self._publish(tx, actor, created.id, org_id=org_id, manifest=manifest, action="agent.approved")
                    report.published.append(manifest.name)
                elif listing.publisher_org_id != org_id:
                    _log.warning("built-in agent %s not published: the name belongs to org %s",
                                 manifest.name, listing.publisher_org_id)
                    report.skipped.append(manifest.name)
                else:
                    self._seed_version(tx, actor, listing, manifest, path=path, report=report)
        return report

    def _seed_version(self, tx: Tx, actor: str, listing: AgentListing, manifest: AgentManifest, *, path: Path,
                      report: SeedReport) -> None:
        existing = tx.fetch_all(_Q.version_manifests, listing.id)
        new = manifest.semver
        same = next((r for r in existing if SemVer.parse(r["version"]) == new), None)
        if same is not None:
            if same["manifest"] != manifest.model_dump(mode="json"):
                _log.warning("%s changed but kept version %s; versions are immutable, bump it", path,
                             manifest.version)
            if same["status"] == "approved" and listing.status == "approved":
                report.unchanged.append(manifest.name)
                return
        highest = max((r["version"] for r in existing), key=SemVer.parse)
        if same is None and new < SemVer.parse(highest):
            _log.warning("%s has version %s, lower than the published %s; not published", path,
                         manifest.version, highest)
            report.skipped.append(manifest.name)
            return
        if same is None:
            previous = AgentManifest.model_validate(next(r["manifest"] for r in existing if r["version"] == highest))
            self._insert_version(tx, listing.id, actor, manifest, previous=previous, previous_version=highest)
            self._add_terms(tx, manifest, listing.publisher_name)
        self._publish(tx, actor, listing.id, org_id=listing.publisher_org_id, manifest=manifest,
                      action="agent.version_approved")
        report.updated.append(manifest.name)

    def _publish(self, tx: Tx, actor: str, agent_id: str, *, org_id: str, manifest: AgentManifest,
                 action: str) -> None:
        tx.execute(_Q.approve_version, actor, "built-in agent", agent_id, manifest.version)
        self._refresh_listing(tx, agent_id, org_id)
        tx.execute(_Q.publish_listing, agent_id)
        self.audit.append(tx, org_id=org_id, actor=actor, action=action, target=agent_id,
                          details={"name": manifest.name, "version": manifest.version, "built_in": True})

    # -- for other contexts: deployments and runs read listings and versions only through these ----
    @staticmethod
    def version_manifest(tx: Tx, agent_id: str, version: str) -> AgentManifest | None:
        """The manifest of version ``version`` of the listing ``agent_id`` (its id, never its name),
        read in the caller's transaction; None when there is no such version. Versions are
        immutable, so a caller may cache the answer."""
        found = tx.fetch_val(_Q.version_manifest, agent_id, version)
        return None if found is None else AgentManifest.model_validate(found)

    @staticmethod
    def agent_id_of(tx: Tx, agent_ref: str) -> str | None:
        """The id of the listing that ``agent_ref`` names (its id "agt_..." or its name), or None;
        in a transaction or a read."""
        found = tx.fetch_val(_Q.agent_id_by_id if agent_ref.startswith("agt_") else _Q.agent_id_by_name, agent_ref)
        return None if found is None else str(found)

    @staticmethod
    def version_package(tx: Tx, agent_id: str, version: str) -> PackageOut | None:
        """The package of version ``version`` of listing ``agent_id`` (its id), or None; in a
        transaction or a read. Once a version is approved its package never changes."""
        row = tx.fetch_one(_Q.version_package, agent_id, version)
        return None if row is None else package_of(row)

    @staticmethod
    def approved_versions_with_package(tx: Tx, sha256: str) -> list[tuple[str, str]]:
        """(agent id, version) of every approved version whose package has this digest."""
        return [(row["agent_id"], row["version"]) for row in tx.fetch_all(_Q.approved_versions_with_package, sha256)]

    def package_bytes(self, sha256: str) -> bytes:
        """A package's bytes from the artifact store (``ArtifactNotFound``, a 404, when missing)."""
        return self._require_artifacts().get(sha256)

    # -- for billing --
    @staticmethod
    def publisher_org_of(tx: Tx, agent_id: str) -> str | None:
        """The org that publishes listing ``agent_id`` (never changes), or None; in a transaction or a read."""
        found = tx.fetch_val(_Q.publisher_org_of, agent_id)
        return None if found is None else str(found)
