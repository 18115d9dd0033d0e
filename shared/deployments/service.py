"""Installing agents: deployments, their life cycle, data-plane identity and health."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jsonschema

from shared.audit import AuditLog
from shared.catalog import AgentManifest, CatalogService
from shared.deployments.models import (
    DeploymentOut,
    DeploymentStatus,
    InstalledSpan,
    InstallOut,
    InvalidTransition,
    RegisterOut,
    RunnableDeployment,
    check_transition,
)
from shared.deployments.ports import DataPlaneSpec, Provisioner
from shared.identity import IdentityService, Principal, Role
from shared.kernel.db.database import Database, Deferred, Row, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.db.statements import Statements
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.pagination import Keyset, Page, next_page

if TYPE_CHECKING:
    from shared.deployments.bundle import Cloud

S = DeploymentStatus
CREDENTIALS_SECRET = "agent-credentials"  # noqa: S105 - the Kubernetes secret's name, not a secret
BYOC_RUNNER_IMAGE = "us-docker.pkg.dev/agent-marketplace/runner/data-plane:latest"


def agent_image(manifest: AgentManifest, runner_image: str) -> str:
    """The container a deployment of this version runs (issue 14): the version's own
    ``runtime.image`` (pinned by digest, the manifest model requires it) when it names one, else
    the runner image, which fetches the version's package by digest at start."""
    return manifest.runtime.image or runner_image
HEARTBEAT_INTERVAL_SECONDS = 30
# Three missed heartbeats and the data plane counts as unreachable.
UNREACHABLE_AFTER = timedelta(seconds=3 * HEARTBEAT_INTERVAL_SECONDS)

_Q = Queries("shared.deployments")

# The columns a state-machine move may set besides the status, in ``move_deployment``'s order.
_MOVABLE = ("version", "granted_permissions", "pending_version", "pending_permissions", "status_before_upgrade",
            "dataplane_key_id", "dataplane", "registered_at", "last_heartbeat_at", "uninstalled_at")


def deployment_out(row: Row) -> DeploymentOut:
    """A ``deployments`` row as the API shows it (the credential's id and the state to return to
    after an upgrade stay inside)."""
    return DeploymentOut.model_validate(row)


def _runnable(row: Row) -> RunnableDeployment:
    return RunnableDeployment(
        id=row["id"], org_id=row["org_id"], agent_id=row["agent_id"], version=row["version"],
        deployment_type=row["deployment_type"], status=DeploymentStatus(row["status"]), config=row["config"],
        granted_permissions=list(row["granted_permissions"]))


class PendingRunnableDeployment:
    """The answer of ``DeploymentService.defer_runnable``: the statement travels with the caller's
    next one; ``get`` reads it (sending it first if it is still held back)."""

    def __init__(self, answer: Deferred) -> None:
        self._answer = answer

    def get(self) -> RunnableDeployment | None:
        """The deployment, or None when there is no deployment with that id."""
        row = self._answer.one()
        return None if row is None else _runnable(row)


def config_problems(manifest: AgentManifest, config: dict[str, Any]) -> list[dict[str, str]]:
    """Every way ``config`` breaks the manifest's config schema, with ``config.<path>`` paths."""
    validator = jsonschema.Draft202012Validator(manifest.config)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        path = "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append({"path": path, "message": error.message})
    return problems


@dataclass(frozen=True)
class BundleFile:
    """A BYOC bundle: the ``.tar.gz`` and the file name to download it as."""

    data: bytes
    filename: str


class DeploymentService:
    """Every state change is checked against the state machine and audited in the same transaction."""

    def __init__(self, db: Database, audit: AuditLog, identity: IdentityService, catalog: CatalogService,
                 provisioner: Provisioner, *, control_plane_url: str) -> None:
        self.db = db
        self.audit = audit
        self.identity = identity
        self.catalog = catalog
        self.provisioner = provisioner
        self.control_plane_url = control_plane_url

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _load(tx: Tx, org_id: str, deployment_id: str, *, lock: bool = False) -> Row:
        row = tx.fetch_one(_Q.deployment_for_update if lock else _Q.deployment, deployment_id, org_id)
        if row is None:
            raise NotFound("deployment not found")
        return row

    def _move(self, tx: Tx, row: Row, target: DeploymentStatus, *, actor: str, reason: str | None = None,
              extra: dict[str, Any] | None = None, **columns: Any) -> Row:
        current = DeploymentStatus(row["status"])
        try:
            check_transition(current, target)
        except InvalidTransition as exc:
            raise Conflict(str(exc), code=ErrorCode.INVALID_STATE) from exc
        unknown = set(columns) - set(_MOVABLE)
        if unknown:
            raise TypeError(f"a move cannot set {sorted(unknown)}")
        args: list[Any] = [target.value, reason]
        for column in _MOVABLE:  # (whether it changes, its new value) for each, JSON as text
            value = columns.get(column)
            args += [column in columns, json.dumps(value) if isinstance(value, list | dict) else value]
        updated = tx.fetch_one(_Q.move_deployment, *args, row["id"])
        assert updated is not None
        self.audit.append(tx, org_id=row["org_id"], actor=actor, action=f"deployment.{target.value}",
                          target=row["id"], details={"from": current.value, "to": target.value,
                                                     "reason": reason, **(extra or {})})
        return updated

    def _spec(self, row: Row, manifest: AgentManifest, api_key: str) -> DataPlaneSpec:
        resources = manifest.runtime.resources
        return DataPlaneSpec(
            deployment_id=row["id"], org_id=row["org_id"], agent_name=manifest.name, agent_version=manifest.version,
            image=manifest.runtime.image, control_plane_url=self.control_plane_url, api_key=api_key,
            timeout_seconds=manifest.runtime.timeout_seconds, cpu=str(resources.cpu), memory=str(resources.memory),
            config=row["config"])

    # -- install -----------------------------------------------------------------------------
    def install(self, principal: Principal, org_id: str, agent_id: str, *, version: str | None,
                deployment_type: str, config: dict[str, Any]) -> InstallOut:
        """Create a deployment and its data-plane credential; SaaS ones are provisioned at once.

        Returns the deployment and, for BYOC, the credential (shown once).
        """
        manifest = self.catalog.installable_version(agent_id, version)
        allowed = sorted(d.value for d in manifest.deployment)
        if deployment_type not in allowed:
            raise Unprocessable(f"{manifest.name} cannot be deployed as {deployment_type}",
                                details=[{"path": "deployment_type", "message": "allowed: " + ", ".join(allowed)}])
        problems = config_problems(manifest, config)
        if problems:
            raise Unprocessable("the config does not match the agent's config schema", details=problems)
        deployment_id = new_id("dep")
        granted = sorted(manifest.permissions)
        with self.db.transaction() as tx:
            # Re-check inside the transaction: a suspension racing this install wins.
            manifest = self.catalog.installable_version(agent_id, manifest.version, tx=tx)
            row = tx.fetch_one(_Q.insert_deployment, deployment_id, org_id, agent_id, manifest.version,
                               deployment_type, json.dumps(config), json.dumps(granted), principal.actor)
            assert row is not None
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.created",
                              target=deployment_id, details={"agent_id": agent_id, "version": manifest.version,
                                                             "deployment_type": deployment_type,
                                                             "granted_permissions": granted})
            key_row, secret = self.identity.create_api_key(
                tx, org_id=org_id, name=f"data plane {deployment_id}", role=Role.DATAPLANE, actor=principal.actor,
                deployment_id=deployment_id)
            CatalogService.adjust_install_count(tx, agent_id, +1)
            row = self._move(tx, row, S.PROVISIONING, actor=principal.actor, dataplane_key_id=key_row.id)
        if deployment_type == "saas":
            try:
                self.provisioner.provision(self._spec(row, manifest, secret))
            except Exception as exc:  # noqa: BLE001 - recorded on the deployment, shown to the user
                with self.db.transaction() as tx:
                    row = self._move(tx, self._load(tx, org_id, deployment_id, lock=True), S.FAILED,
                                     actor="system:provisioner", reason=f"provisioning failed: {exc}")
            return InstallOut.model_validate(row)
        return InstallOut.model_validate({**row, "dataplane_key": secret})

    def page(self, org_id: str, *, limit: int, cursor: str | None, status: DeploymentStatus | None
             ) -> Page[DeploymentOut]:
        """A page of the org's deployments, newest first, optionally only those in ``status``."""
        after = Keyset.after(cursor)
        wanted = status.value if status else None
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.deployments_page, org_id, wanted, wanted, *after.params, limit + 1)
        items, next_cursor = next_page(rows, limit, lambda r: Keyset.of(r["created_at"], r["id"]))
        return Page[DeploymentOut](items=[deployment_out(r) for r in items], next_cursor=next_cursor)

    def get(self, org_id: str, deployment_id: str) -> DeploymentOut:
        """One deployment of the org."""
        with self.db.read() as tx:
            return deployment_out(self._load(tx, org_id, deployment_id))

    def uninstall(self, principal: Principal, org_id: str, deployment_id: str) -> DeploymentOut:
        """Revoke the credential, remove the data plane; the record stays, ``uninstalled``."""
        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=True)
            if row["status"] == S.UNINSTALLED:
                return deployment_out(row)
            if row["dataplane_key_id"]:
                self.identity.revoke_api_key(tx, org_id=org_id, key_id=row["dataplane_key_id"], actor=principal.actor)
            CatalogService.adjust_install_count(tx, row["agent_id"], -1)
            row = self._move(tx, row, S.UNINSTALLED, actor=principal.actor, uninstalled_at=datetime.now(UTC))
        if row["deployment_type"] == "saas":
            self.provisioner.deprovision(deployment_id)
        return deployment_out(row)

    # -- upgrades --------------------------------------------------------------------------------
    def upgrade(self, principal: Principal, org_id: str, deployment_id: str, version: str) -> DeploymentOut:
        """Move to ``version``; one that asks for new permissions waits for an admin's consent."""
        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=True)
            manifest = self.catalog.installable_version(row["agent_id"], version, tx=tx)
            if manifest.version == row["version"]:
                raise Conflict(f"the deployment already runs {version}", code=ErrorCode.SAME_VERSION)
            added = sorted(set(manifest.permissions) - set(row["granted_permissions"]))
            if row["deployment_type"] not in {d.value for d in manifest.deployment}:
                raise Unprocessable(f"version {version} cannot be deployed as {row['deployment_type']}")
            problems = config_problems(manifest, row["config"])
            if problems:
                raise Unprocessable("the deployment's config does not match the new version's schema",
                                    details=problems)
            if added:
                return deployment_out(self._move(tx, row, S.UPGRADE_PENDING_CONSENT, actor=principal.actor,
                                  reason=f"version {manifest.version} asks for new permissions",
                                  extra={"version": manifest.version, "added_permissions": added},
                                  pending_version=manifest.version, pending_permissions=added,
                                  status_before_upgrade=row["status"]))
            tx.execute(_Q.set_version, manifest.version, deployment_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.upgraded",
                              target=deployment_id, details={"from": row["version"], "to": manifest.version})
            return deployment_out(self._load(tx, org_id, deployment_id))

    def decide_upgrade(self, principal: Principal, org_id: str, deployment_id: str, *, approve: bool,
                       comment: str) -> DeploymentOut:
        """The admin's consent (or refusal) to the permissions a pending upgrade adds."""
        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=True)
            if row["status"] != S.UPGRADE_PENDING_CONSENT:
                raise Conflict("no upgrade is waiting for consent", code=ErrorCode.INVALID_STATE)
            back = DeploymentStatus(row["status_before_upgrade"] or S.READY)
            if back == S.UPGRADE_PENDING_CONSENT:
                back = S.READY
            details = {"version": row["pending_version"], "permissions": row["pending_permissions"],
                       "approved": approve, "comment": comment}
            columns: dict[str, Any] = {"pending_version": None, "pending_permissions": None,
                                       "status_before_upgrade": None}
            if approve:
                columns["version"] = row["pending_version"]
                columns["granted_permissions"] = sorted(set(row["granted_permissions"])
                                                        | set(row["pending_permissions"]))
            self.audit.append(tx, org_id=org_id, actor=principal.actor,
                              action="deployment.consent_granted" if approve else "deployment.consent_refused",
                              target=deployment_id, details=details)
            return deployment_out(self._move(tx, row, back, actor=principal.actor, extra=details, **columns))

    # -- data plane ------------------------------------------------------------------------------
    def register(self, principal: Principal, *, version: str, hostname: str, capabilities: list[str]
                 ) -> RegisterOut:
        """A data plane connects out with its deployment's key and reports ready."""
        deployment_id, org_id = principal.deployment_id, principal.key_org_id
        if not deployment_id or not org_id:
            raise NotFound("this credential belongs to no deployment")
        info = {"version": version, "hostname": hostname, "capabilities": capabilities}
        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=True)
            if row["status"] in (S.UNINSTALLED, S.FAILED):
                raise Conflict(f"the deployment is {row['status']}", code=ErrorCode.INVALID_STATE)
            now = datetime.now(UTC)
            if row["status"] in (S.PROVISIONING, S.UNREACHABLE):
                row = self._move(tx, row, S.READY, actor=principal.actor, extra={"dataplane": info},
                                 dataplane=info, registered_at=now, last_heartbeat_at=now)
            else:
                tx.execute(_Q.record_registration, json.dumps(info), now, now, deployment_id)
                self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.registered",
                                  target=deployment_id, details={"dataplane": info})
                row = self._load(tx, org_id, deployment_id)
            manifest = self._manifest(tx, row)
        return RegisterOut(deployment_id=row["id"], org_id=row["org_id"], agent_id=row["agent_id"],
                           version=row["version"], status=row["status"],
                           heartbeat_interval_seconds=HEARTBEAT_INTERVAL_SECONDS, config=row["config"],
                           granted_permissions=row["granted_permissions"],
                           manifest=manifest.model_dump(mode="json"))

    def _manifest(self, tx: Tx, row: Row) -> AgentManifest:
        """The manifest of the version the deployment runs (the catalog's, read in ``tx``)."""
        manifest = self.catalog.version_manifest(tx, row["agent_id"], row["version"])
        if manifest is None:
            raise NotFound(f"version {row['version']} of agent {row['agent_id']} not found")
        return manifest

    def heartbeat(self, principal: Principal) -> DeploymentOut:
        """Keep the deployment ``ready``; an unreachable one comes back."""
        deployment_id, org_id = principal.deployment_id, principal.key_org_id
        if not deployment_id or not org_id:
            raise NotFound("this credential belongs to no deployment")
        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=True)
            if row["status"] == S.UNREACHABLE:
                return deployment_out(self._move(tx, row, S.READY, actor=principal.actor, reason="heartbeat resumed",
                                                 last_heartbeat_at=datetime.now(UTC)))
            if row["status"] not in (S.READY, S.UPGRADE_PENDING_CONSENT):
                raise Conflict(f"the deployment is {row['status']}: register first", code=ErrorCode.INVALID_STATE)
            tx.execute(_Q.record_heartbeat, deployment_id)
            return deployment_out(self._load(tx, org_id, deployment_id))

    def mark_unreachable(self, *, now: datetime | None = None) -> list[str]:
        """The scheduled sweep: ready deployments silent for three heartbeats become unreachable."""
        cutoff = (now or datetime.now(UTC)) - UNREACHABLE_AFTER
        moved = []
        with self.db.transaction() as tx:
            stale = tx.fetch_all(_Q.stale_ready_deployments, cutoff)
            for row in stale:
                self._move(tx, row, S.UNREACHABLE, actor="system:health",
                           reason=f"no heartbeat since {row['last_heartbeat_at'].isoformat()}")
                moved.append(row["id"])
        return moved

    # -- BYOC ----------------------------------------------------------------------------------
    def bundle(self, principal: Principal, org_id: str, deployment_id: str, *, cloud: Cloud,
               include_secret: bool) -> BundleFile:
        """The BYOC bundle (Helm chart + Terraform) for a BYOC deployment.

        The bundle references the Kubernetes secret holding the data-plane key. Only when the
        caller asks for it is a key written in clear: a fresh one, since only hashes are stored,
        and the previous key is revoked in the same transaction.
        """
        from shared.deployments.bundle import BundleSpec, build_bundle  # noqa: PLC0415 - templates load on demand

        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=include_secret)
            if row["deployment_type"] != "byoc":
                raise Conflict("only BYOC deployments have a bundle", code=ErrorCode.NOT_BYOC)
            if row["status"] in (S.UNINSTALLED, S.FAILED):
                raise Conflict(f"the deployment is {row['status']}", code=ErrorCode.INVALID_STATE)
            manifest = self._manifest(tx, row)
            secret = None
            if include_secret:
                if row["dataplane_key_id"]:
                    self.identity.revoke_api_key(tx, org_id=org_id, key_id=row["dataplane_key_id"],
                                                 actor=principal.actor)
                key_row, secret = self.identity.create_api_key(
                    tx, org_id=org_id, name=f"data plane {deployment_id}", role=Role.DATAPLANE,
                    actor=principal.actor, deployment_id=deployment_id)
                tx.execute(_Q.set_dataplane_key, key_row.id, deployment_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.bundle_issued",
                              target=deployment_id, details={"cloud": cloud, "secret_included": include_secret})
            spec = BundleSpec(
                control_plane_url=self.control_plane_url, deployment_id=deployment_id, org_id=org_id,
                agent_name=manifest.name, agent_version=manifest.version,
                image=agent_image(manifest, BYOC_RUNNER_IMAGE), agent_config=row["config"],
                credential_secret_name=CREDENTIALS_SECRET, api_key=secret, cloud=cloud)
            data = build_bundle(spec, include_secret=include_secret)
        return BundleFile(data=data, filename=f"{manifest.name}-{manifest.version}-{deployment_id}.tar.gz")

    # -- agent packages (issue 14) ---------------------------------------------------------------
    def package_for_dataplane(self, principal: Principal, sha256: str) -> bytes:
        """The bytes of the package with this digest, for a data plane whose org has a deployment
        (not uninstalled) of an approved version carrying it; 404 otherwise, unknown digests alike."""
        org_id = principal.key_org_id
        if not principal.deployment_id or not org_id:
            raise NotFound("this credential belongs to no deployment")
        with self.db.read() as tx:
            versions = self.catalog.approved_versions_with_package(tx, sha256) if len(sha256) == 64 else []
            allowed = bool(versions) and bool(tx.fetch_val(
                _Q.org_deploys_any_version, [a for a, _ in versions], [v for _, v in versions], org_id))
        if not allowed:
            raise NotFound("no package with that digest")
        return self.catalog.package_bytes(sha256)

    # -- for other contexts ----------------------------------------------------------------------
    def has_installed(self, tx: Statements, org_id: str, agent_id: str) -> bool:
        """Has ``org_id`` ever installed the agent, in the caller's transaction? Uninstalled
        deployments count (the org used the agent and may say why it left); failed ones do not (it
        never ran). The catalog's ``InstallHistory``: only such orgs may review an agent."""
        return bool(tx.fetch_val(_Q.has_installed, org_id, agent_id))

    @staticmethod
    def runnable(tx: Tx, deployment_id: str) -> RunnableDeployment | None:
        """What a run's start needs of deployment ``deployment_id`` (any org's), read in the
        caller's transaction; None when there is no such deployment."""
        row = tx.fetch_one(_Q.deployment_for_run, deployment_id)
        return None if row is None else _runnable(row)

    @staticmethod
    def defer_runnable(tx: Tx, deployment_id: str) -> PendingRunnableDeployment:
        """``runnable`` without a round trip of its own: the SELECT is held back (``Tx.defer``) and
        sent with the caller's next statement; ``get()`` on the result reads the answer."""
        return PendingRunnableDeployment(tx.defer(_Q.deployment_for_run, deployment_id))

    # -- for billing --
    @staticmethod
    def installed_during(tx: Tx, start: datetime, end: datetime) -> list[InstalledSpan]:
        """Deployments installed at some moment of [``start``, ``end``) (failed ones excepted), in
        the caller's transaction: billing charges their agents' subscription fees."""
        return [InstalledSpan(id=r["id"], org_id=r["org_id"], agent_id=r["agent_id"], version=r["version"],
                              installed_at=r["created_at"], uninstalled_at=r["uninstalled_at"])
                for r in tx.fetch_all(_Q.installed_during, end, start)]

    # -- for runs --
    def uninstalled_among(self, tx: Tx, deployment_ids: Sequence[str]) -> set[str]:
        """Which of ``deployment_ids`` are uninstalled."""
        return {row["id"] for row in tx.fetch_all(_Q.uninstalled_among, list(deployment_ids))}



