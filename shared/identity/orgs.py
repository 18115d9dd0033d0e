"""Organisations, their members and roles, API keys and preferences."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.audit import AuditLog
from shared.identity.models import Principal, Role
from shared.identity.service import IdentityService, Users
from shared.kernel.db.database import Database, Row, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id

MAX_PREFERENCES_BYTES = 64 * 1024


class OrgService:
    """Every mutation writes its audit entry in the same transaction."""

    def __init__(self, db: Database, users: Users, identity: IdentityService, audit: AuditLog) -> None:
        self.db = db
        self.users = users
        self.identity = identity
        self.audit = audit

    def role_of(self, principal: Principal, org_id: str) -> Role | None:
        """The caller's role in ``org_id``; None when it is not a member (or the org does not exist)."""
        if principal.kind == "api_key":
            return principal.key_role if principal.key_org_id == org_id else None
        known, loaded = principal.known_role(org_id)
        if known:
            return loaded
        with self.db.read() as tx:
            role = tx.fetch_val("SELECT role FROM memberships WHERE org_id = %s AND user_id = %s",
                                org_id, principal.subject)
        return Role(role) if role else None

    def create(self, principal: Principal, name: str) -> Row:
        """A new org whose creator becomes its admin."""
        if principal.kind != "user":
            raise Unprocessable("organisations are created by users, not API keys", code=ErrorCode.USER_REQUIRED)
        org_id = new_id("org")
        with self.db.transaction() as tx:
            org = tx.fetch_one("INSERT INTO orgs (id, name, created_by) VALUES (%s, %s, %s) RETURNING *",
                               org_id, name, principal.subject)
            tx.execute("INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'admin')",
                       org_id, principal.subject)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="org.created", target=org_id,
                              details={"name": name})
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.added",
                              target=principal.subject, details={"role": "admin"})
        assert org is not None
        return {**org, "role": Role.ADMIN}

    def get(self, org_id: str) -> Row:
        """An org by id."""
        with self.db.read() as tx:
            org = tx.fetch_one("SELECT * FROM orgs WHERE id = %s", org_id)
        if org is None:
            raise NotFound("organisation not found")
        return org

    # -- members -------------------------------------------------------------
    def list_members(self, org_id: str) -> list[Row]:
        """Every member with their role."""
        with self.db.read() as tx:
            return tx.fetch_all("SELECT m.org_id, m.user_id, u.email, m.role, m.created_at FROM memberships m "
                                "JOIN users u ON u.id = m.user_id WHERE m.org_id = %s ORDER BY m.created_at",
                                org_id)

    def add_member(self, principal: Principal, org_id: str, email: str, role: Role) -> Row:
        """Add a user by email (created if new) with ``role``."""
        with self.db.transaction() as tx:
            user = self.users.ensure(tx, email)
            inserted = tx.execute("INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, %s) "
                                  "ON CONFLICT DO NOTHING", org_id, user["id"], role.value)
            if not inserted:
                raise Conflict(f"{email} is already a member of this organisation", code=ErrorCode.ALREADY_MEMBER)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.added",
                              target=user["id"], details={"role": role.value, "email": email})
            row = tx.fetch_one("SELECT m.org_id, m.user_id, u.email, m.role, m.created_at FROM memberships m "
                               "JOIN users u ON u.id = m.user_id WHERE m.org_id = %s AND m.user_id = %s",
                               org_id, user["id"])
        assert row is not None
        return row

    def change_role(self, principal: Principal, org_id: str, user_id: str, role: Role) -> Row:
        """Change a member's role; the last admin cannot be demoted."""
        with self.db.transaction() as tx:
            current = self._lock_member(tx, org_id, user_id)
            if current["role"] == Role.ADMIN and role != Role.ADMIN:
                self._guard_last_admin(tx, org_id)
            tx.execute("UPDATE memberships SET role = %s WHERE org_id = %s AND user_id = %s",
                       role.value, org_id, user_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.role_changed",
                              target=user_id, details={"from": current["role"], "to": role.value})
            row = tx.fetch_one("SELECT m.org_id, m.user_id, u.email, m.role, m.created_at FROM memberships m "
                               "JOIN users u ON u.id = m.user_id WHERE m.org_id = %s AND m.user_id = %s",
                               org_id, user_id)
        assert row is not None
        return row

    def remove_member(self, principal: Principal, org_id: str, user_id: str) -> None:
        """Remove a member; the last admin cannot leave."""
        with self.db.transaction() as tx:
            current = self._lock_member(tx, org_id, user_id)
            if current["role"] == Role.ADMIN:
                self._guard_last_admin(tx, org_id)
            tx.execute("DELETE FROM memberships WHERE org_id = %s AND user_id = %s", org_id, user_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.removed",
                              target=user_id, details={"role": current["role"]})

    @staticmethod
    def _lock_member(tx: Any, org_id: str, user_id: str) -> Row:
        # Lock every membership row of the org so two concurrent demotions cannot both pass the
        # last-admin check.
        rows = tx.fetch_all("SELECT user_id, role FROM memberships WHERE org_id = %s FOR UPDATE", org_id)
        for row in rows:
            if row["user_id"] == user_id:
                return dict(row)
        raise NotFound("no such member in this organisation")

    @staticmethod
    def _guard_last_admin(tx: Any, org_id: str) -> None:
        admins = tx.fetch_val("SELECT count(*) FROM memberships WHERE org_id = %s AND role = 'admin'", org_id)
        if int(admins) <= 1:
            raise Conflict("an organisation must keep at least one admin", code=ErrorCode.LAST_ADMIN)

    # -- API keys --------------------------------------------------------------
    def create_api_key(self, principal: Principal, org_id: str, name: str, role: Role) -> tuple[Row, str]:
        """A new member-role API key for the org (data-plane keys come from installs)."""
        if role == Role.DATAPLANE:
            raise Unprocessable("data-plane keys are issued per deployment at install time",
                                details=[{"path": "role", "message": "dataplane is not allowed here"}])
        with self.db.transaction() as tx:
            return self.identity.create_api_key(tx, org_id=org_id, name=name, role=role, actor=principal.actor)

    def list_api_keys(self, org_id: str) -> list[Row]:
        """Every key of the org (never the secrets)."""
        with self.db.read() as tx:
            return tx.fetch_all("SELECT id, org_id, name, role, created_at, revoked_at FROM api_keys "
                                "WHERE org_id = %s ORDER BY created_at", org_id)

    def revoke_api_key(self, principal: Principal, org_id: str, key_id: str) -> Row:
        """Revoke a key; 404 when the org has no such live key."""
        with self.db.transaction() as tx:
            row = self.identity.revoke_api_key(tx, org_id=org_id, key_id=key_id, actor=principal.actor)
        if row is None:
            raise NotFound("no such active API key in this organisation")
        return row

    # -- preferences (memory Level 5) ------------------------------------------
    def get_preferences(self, org_id: str) -> Row:
        """The org's preferences ({} until set)."""
        with self.db.read() as tx:
            row = tx.fetch_one("SELECT org_id, data, updated_at FROM org_preferences WHERE org_id = %s", org_id)
        return row or {"org_id": org_id, "data": {}, "updated_at": None}

    def put_preferences(self, principal: Principal, org_id: str, data: dict[str, Any]) -> Row:
        """Replace the preferences."""
        encoded = json.dumps(data, sort_keys=True)
        if len(encoded.encode()) > MAX_PREFERENCES_BYTES:
            raise Unprocessable(f"preferences must be at most {MAX_PREFERENCES_BYTES} bytes of JSON",
                                details=[{"path": "data", "message": "too large"}])
        with self.db.transaction() as tx:
            row = tx.fetch_one(
                "INSERT INTO org_preferences (org_id, data, updated_by) VALUES (%s, %s::jsonb, %s) "
                "ON CONFLICT (org_id) DO UPDATE SET data = EXCLUDED.data, updated_by = EXCLUDED.updated_by, "
                "updated_at = now() RETURNING org_id, data, updated_at", org_id, encoded, principal.actor)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="preferences.updated",
                              target=org_id, details={"keys": sorted(data)})
        assert row is not None
        return row

    # -- for catalog --
    _catalog_queries = Queries("shared.identity")

    def org_name(self, tx: Tx, org_id: str) -> str | None:
        """The org's name, or None when there is no such org; read in the caller's transaction."""
        name = tx.fetch_val(self._catalog_queries.catalog_org_name, org_id)
        return None if name is None else str(name)

    def org_names(self, tx: Tx, org_ids: Sequence[str]) -> dict[str, str]:
        """The names of those of ``org_ids`` that exist, by id; read in the caller's transaction."""
        if not org_ids:
            return {}
        found = tx.fetch_all(self._catalog_queries.catalog_org_names, list(org_ids))
        return {str(row["id"]): str(row["name"]) for row in found}

    def ensure_system_org(self, tx: Tx, owner_email: str, name: str) -> tuple[str, str]:
        """The org ``name`` that the system user ``owner_email`` owns, made on first use (the user,
        too) with that user as its admin, in the caller's transaction (which serialises callers).
        Returns the org's id and the user's audit actor."""
        user = self.users.ensure(tx, owner_email)
        actor = Principal(kind="user", subject=user["id"]).actor
        org_id = tx.fetch_val(self._catalog_queries.catalog_system_org, user["id"], name)
        if org_id is None:
            org_id = new_id("org")
            tx.execute(self._catalog_queries.catalog_insert_system_org, org_id, name, user["id"])
            tx.execute(self._catalog_queries.catalog_insert_system_admin, org_id, user["id"])
            self.audit.append(tx, org_id=org_id, actor=actor, action="org.created", target=org_id,
                              details={"name": name})
            self.audit.append(tx, org_id=org_id, actor=actor, action="member.added", target=user["id"],
                              details={"role": "admin"})
        return str(org_id), actor
