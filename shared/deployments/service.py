"""Installing agents: deployments, their life cycle, data-plane identity and health."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jsonschema

from shared.audit import AuditLog
from shared.catalog import AgentManifest, CatalogService
from shared.deployments.models import DeploymentStatus, InvalidTransition, check_transition
from shared.deployments.ports import DataPlaneSpec, Provisioner
from shared.identity import IdentityService, Principal, Role
from shared.kernel.db.database import Database, Row, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.pagination import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from shared.deployments.bundle import Cloud

S = DeploymentStatus
CREDENTIALS_SECRET = "agent-credentials"  # noqa: S105 - the Kubernetes secret's name, not a secret
BYOC_RUNNER_IMAGE = "us-docker.pkg.dev/agent-marketplace/runner/data-plane:latest"
HEARTBEAT_INTERVAL_SECONDS = 30
# Three missed heartbeats and the data plane counts as unreachable.
UNREACHABLE_AFTER = timedelta(seconds=3 * HEARTBEAT_INTERVAL_SECONDS)

_COLUMNS = ("id, org_id, agent_id, version, deployment_type, status, status_reason, config, granted_permissions, "
            "pending_version, pending_permissions, dataplane, registered_at, last_heartbeat_at, created_by, "
            "created_at, updated_at, dataplane_key_id, status_before_upgrade")


def config_problems(manifest: AgentManifest, config: dict[str, Any]) -> list[dict[str, str]]:
    """Every way ``config`` breaks the manifest's config schema, with ``config.<path>`` paths."""
    validator = jsonschema.Draft202012Validator(manifest.config)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        path = "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append({"path": path, "message": error.message})
    return problems


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
        row = tx.fetch_one(f"SELECT {_COLUMNS} FROM deployments WHERE id = %s AND org_id = %s"
                           + (" FOR UPDATE" if lock else ""), deployment_id, org_id)
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
        sets = ["status = %s", "status_reason = %s", "updated_at = now()"]
        args: list[Any] = [target.value, reason]
        for column, value in columns.items():
            sets.append(f"{column} = %s")
            args.append(json.dumps(value) if isinstance(value, list | dict) else value)
        updated = tx.fetch_one(f"UPDATE deployments SET {', '.join(sets)} WHERE id = %s RETURNING {_COLUMNS}",
                               *args, row["id"])
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
                deployment_type: str, config: dict[str, Any]) -> tuple[Row, str | None]:
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
            row = tx.fetch_one(
                f"INSERT INTO deployments (id, org_id, agent_id, version, deployment_type, status, config, "
                f"granted_permissions, created_by) VALUES (%s, %s, %s, %s, %s, 'pending', %s::jsonb, %s::jsonb, %s) "
                f"RETURNING {_COLUMNS}", deployment_id, org_id, agent_id, manifest.version, deployment_type,
                json.dumps(config), json.dumps(granted), principal.actor)
            assert row is not None
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.created",
                              target=deployment_id, details={"agent_id": agent_id, "version": manifest.version,
                                                             "deployment_type": deployment_type,
                                                             "granted_permissions": granted})
            key_row, secret = self.identity.create_api_key(
                tx, org_id=org_id, name=f"data plane {deployment_id}", role=Role.DATAPLANE, actor=principal.actor,
                deployment_id=deployment_id)
            CatalogService.adjust_install_count(tx, agent_id, +1)
            row = self._move(tx, row, S.PROVISIONING, actor=principal.actor, dataplane_key_id=key_row["id"])
        if deployment_type == "saas":
            try:
                self.provisioner.provision(self._spec(row, manifest, secret))
            except Exception as exc:  # noqa: BLE001 - recorded on the deployment, shown to the user
                with self.db.transaction() as tx:
                    row = self._move(tx, self._load(tx, org_id, deployment_id, lock=True), S.FAILED,
                                     actor="system:provisioner", reason=f"provisioning failed: {exc}")
            return row, None
        return row, secret

    def page(self, org_id: str, *, limit: int, cursor: str | None, status: str | None) -> tuple[list[Row], str | None]:
        """A page of the org's deployments, newest first."""
        after = decode_cursor(cursor, required=("created_at", "id"))
        clauses, args = ["org_id = %s"], [org_id]
        if status:
            clauses.append("status = %s")
            args.append(status)
        if after:
            clauses.append("(created_at, id) < (%s::timestamptz, %s)")
            args += [after["created_at"], after["id"]]
        with self.db.read() as tx:
            rows = tx.fetch_all(f"SELECT {_COLUMNS} FROM deployments WHERE {' AND '.join(clauses)} "
                                "ORDER BY created_at DESC, id DESC LIMIT %s", *args, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor({"created_at": rows[-1]["created_at"].isoformat(), "id": rows[-1]["id"]}
                                    ) if more else None
        return rows, next_cursor

    def get(self, org_id: str, deployment_id: str) -> Row:
        """One deployment of the org."""
        with self.db.read() as tx:
            return self._load(tx, org_id, deployment_id)

    def uninstall(self, principal: Principal, org_id: str, deployment_id: str) -> Row:
        """Revoke the credential, remove the data plane; the record stays, ``uninstalled``."""
        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=True)
            if row["status"] == S.UNINSTALLED:
                return row
            if row["dataplane_key_id"]:
                self.identity.revoke_api_key(tx, org_id=org_id, key_id=row["dataplane_key_id"], actor=principal.actor)
            CatalogService.adjust_install_count(tx, row["agent_id"], -1)
            row = self._move(tx, row, S.UNINSTALLED, actor=principal.actor, uninstalled_at=datetime.now(UTC))
        if row["deployment_type"] == "saas":
            self.provisioner.deprovision(deployment_id)
        return row

    # -- upgrades --------------------------------------------------------------------------------
    def upgrade(self, principal: Principal, org_id: str, deployment_id: str, version: str) -> Row:
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
                return self._move(tx, row, S.UPGRADE_PENDING_CONSENT, actor=principal.actor,
                                  reason=f"version {manifest.version} asks for new permissions",
                                  extra={"version": manifest.version, "added_permissions": added},
                                  pending_version=manifest.version, pending_permissions=added,
                                  status_before_upgrade=row["status"])
            tx.execute("UPDATE deployments SET version = %s, updated_at = now() WHERE id = %s",
                       manifest.version, deployment_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.upgraded",
                              target=deployment_id, details={"from": row["version"], "to": manifest.version})
            return self._load(tx, org_id, deployment_id)

    def decide_upgrade(self, principal: Principal, org_id: str, deployment_id: str, *, approve: bool,
                       comment: str) -> Row:
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
            return self._move(tx, row, back, actor=principal.actor, extra=details, **columns)

    # -- data plane ------------------------------------------------------------------------------
    def register(self, principal: Principal, *, version: str, hostname: str, capabilities: list[str]
                 ) -> tuple[Row, AgentManifest]:
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
                tx.execute("UPDATE deployments SET dataplane = %s::jsonb, registered_at = %s, last_heartbeat_at = %s "
                           "WHERE id = %s", json.dumps(info), now, now, deployment_id)
                self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.registered",
                                  target=deployment_id, details={"dataplane": info})
                row = self._load(tx, org_id, deployment_id)
            manifest = self._manifest(tx, row)
        return row, manifest

    @staticmethod
    def _manifest(tx: Tx, row: Row) -> AgentManifest:
        found = tx.fetch_val("SELECT manifest FROM agent_versions WHERE agent_id = %s AND version = %s",
                             row["agent_id"], row["version"])
        return AgentManifest.model_validate(found)

    def heartbeat(self, principal: Principal) -> Row:
        """Keep the deployment ``ready``; an unreachable one comes back."""
        deployment_id, org_id = principal.deployment_id, principal.key_org_id
        if not deployment_id or not org_id:
            raise NotFound("this credential belongs to no deployment")
        with self.db.transaction() as tx:
            row = self._load(tx, org_id, deployment_id, lock=True)
            if row["status"] == S.UNREACHABLE:
                return self._move(tx, row, S.READY, actor=principal.actor, reason="heartbeat resumed",
                                  last_heartbeat_at=datetime.now(UTC))
            if row["status"] not in (S.READY, S.UPGRADE_PENDING_CONSENT):
                raise Conflict(f"the deployment is {row['status']}: register first", code=ErrorCode.INVALID_STATE)
            tx.execute("UPDATE deployments SET last_heartbeat_at = now() WHERE id = %s", deployment_id)
            return self._load(tx, org_id, deployment_id)

    def mark_unreachable(self, *, now: datetime | None = None) -> list[str]:
        """The scheduled sweep: ready deployments silent for three heartbeats become unreachable."""
        cutoff = (now or datetime.now(UTC)) - UNREACHABLE_AFTER
        moved = []
        with self.db.transaction() as tx:
            stale = tx.fetch_all(f"SELECT {_COLUMNS} FROM deployments WHERE status = 'ready' "
                                 "AND last_heartbeat_at < %s FOR UPDATE SKIP LOCKED", cutoff)
            for row in stale:
                self._move(tx, row, S.UNREACHABLE, actor="system:health",
                           reason=f"no heartbeat since {row['last_heartbeat_at'].isoformat()}")
                moved.append(row["id"])
        return moved

    def manifest_of(self, org_id: str, deployment_id: str) -> tuple[Row, AgentManifest]:
        """A deployment with the manifest of the version it runs."""
        with self.db.read() as tx:
            row = self._load(tx, org_id, deployment_id)
            return row, self._manifest(tx, row)

    # -- BYOC ----------------------------------------------------------------------------------
    def bundle(self, principal: Principal, org_id: str, deployment_id: str, *, cloud: Cloud,
               include_secret: bool) -> tuple[bytes, str]:
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
                tx.execute("UPDATE deployments SET dataplane_key_id = %s, updated_at = now() WHERE id = %s",
                           key_row["id"], deployment_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="deployment.bundle_issued",
                              target=deployment_id, details={"cloud": cloud, "secret_included": include_secret})
            spec = BundleSpec(
                control_plane_url=self.control_plane_url, deployment_id=deployment_id, org_id=org_id,
                agent_name=manifest.name, agent_version=manifest.version,
                image=manifest.runtime.image or BYOC_RUNNER_IMAGE, agent_config=row["config"],
                credential_secret_name=CREDENTIALS_SECRET, api_key=secret, cloud=cloud)
            data = build_bundle(spec, include_secret=include_secret)
        return data, f"{manifest.name}-{manifest.version}-{deployment_id}.tar.gz"

    # -- for catalog --
    _catalog_queries = Queries("shared.deployments")

    def has_installed(self, tx: Tx, org_id: str, agent_id: str) -> bool:
        """Has ``org_id`` ever installed the agent, in the caller's transaction? Uninstalled
        deployments count (the org used the agent and may say why it left); failed ones do not (it
        never ran). The catalog's ``InstallHistory``: only such orgs may review an agent."""
        return bool(tx.fetch_val(self._catalog_queries.catalog_has_installed, org_id, agent_id))
