"""Organisations, their members and roles, API keys and preferences."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.audit import AuditLog
from shared.identity.access import ANY_MEMBER, ORG_NOT_FOUND, Need, decide
from shared.identity.models import (
    ApiKeyCreated,
    ApiKeyOut,
    MemberOut,
    OrgOut,
    PreferencesOut,
    Principal,
    Role,
)
from shared.identity.service import IdentityService, Users
from shared.kernel.db.database import Database, Deferred, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id

MAX_PREFERENCES_BYTES = 64 * 1024
_Q = Queries("shared.identity")


class MemberRoles:
    """A caller's roles in its orgs, read with the caller's next statement (``OrgService.member_roles``)."""

    def __init__(self, principal: Principal, answer: Deferred | None) -> None:
        self._principal = principal
        self._answer = answer
        self._roles: dict[str, Role] | None = None

    def role_in(self, org_id: str) -> Role | None:
        """The caller's role in ``org_id``; None when it is not a member (or the org does not exist)."""
        if self._answer is None:
            return self._principal.known_role(org_id)[1]
        if self._roles is None:
            self._roles = {row["org_id"]: Role(row["role"]) for row in self._answer.rows()}
        return self._roles.get(org_id)


class OrgService:
    """Every mutation writes its audit entry in the same transaction."""

    def __init__(self, db: Database, users: Users, identity: IdentityService, audit: AuditLog) -> None:
        self.db = db
        self.users = users
        self.identity = identity
        self.audit = audit

    # -- roles and the access decision -------------------------------------------
    def role_of(self, principal: Principal, org_id: str) -> Role | None:
        """The caller's role in ``org_id``; None when it is not a member (or the org does not exist).

        No statement for an API key, nor when authentication loaded the role already.
        """
        known, loaded = principal.known_role(org_id)
        if known:
            return loaded
        with self.db.read() as tx:
            role = tx.fetch_val(_Q.role_in_org, org_id, principal.subject)
        return Role(role) if role else None

    def member_roles(self, tx: Tx, principal: Principal) -> MemberRoles:
        """The caller's role in each of its orgs, for a decision made inside the caller's transaction.

        A user's memberships (a few rows) are read with ``tx.defer``: the statement travels with
        the caller's next one and costs no round trip of its own. An API key's role, or memberships
        that authentication already loaded, need no statement.
        """
        if principal.kind != "user" or principal.memberships is not None:
            return MemberRoles(principal, None)
        return MemberRoles(principal, tx.defer(_Q.member_roles_of_user, principal.subject))

    def authorize(self, principal: Principal, org_id: str, roles: frozenset[Role], *, doing: str,
                  unknown: str = ORG_NOT_FOUND) -> Role:
        """The caller's role in ``org_id`` when it grants the action; else raise what
        ``shared.identity.access.decide`` says (404 ``unknown`` for a non-member, 403 otherwise)."""
        role = self.role_of(principal, org_id)
        denied = decide(principal, Need(roles=roles, doing=doing, unknown=unknown), role)
        if denied is not None:
            raise denied
        assert role is not None
        return role

    def sees_everything_of(self, principal: Principal | None, org_id: str) -> bool:
        """Whether the caller may see what ``org_id`` has not made public (its unapproved
        listings): a platform admin, or a member of the org in any role."""
        if principal is None:
            return False
        if principal.platform_admin:
            return True
        role = self.role_of(principal, org_id)
        return decide(principal, Need(roles=ANY_MEMBER, doing="see the organisation's own items"), role) is None

    # -- orgs ------------------------------------------------------------------------
    def create(self, principal: Principal, name: str) -> OrgOut:
        """A new org whose creator becomes its admin."""
        if principal.kind != "user":
            raise Unprocessable("organisations are created by users, not API keys", code=ErrorCode.USER_REQUIRED)
        org_id = new_id("org")
        with self.db.transaction() as tx:
            org = tx.fetch_one(_Q.insert_org, org_id, name, principal.subject)
            tx.execute(_Q.insert_membership, org_id, principal.subject, Role.ADMIN.value)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="org.created", target=org_id,
                              details={"name": name})
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.added",
                              target=principal.subject, details={"role": "admin"})
        assert org is not None
        return OrgOut(**org, role=Role.ADMIN)

    def get(self, org_id: str, *, role: Role | None = None) -> OrgOut:
        """An org by id, with ``role`` as the caller's role in it."""
        with self.db.read() as tx:
            org = tx.fetch_one(_Q.org_by_id, org_id)
        if org is None:
            raise NotFound(ORG_NOT_FOUND)
        return OrgOut(**org, role=role)

    # -- members -------------------------------------------------------------
    def list_members(self, org_id: str) -> list[MemberOut]:
        """Every member with their role, in the order they joined."""
        with self.db.read() as tx:
            return [MemberOut(**row) for row in tx.fetch_all(_Q.members_of_org, org_id)]

    @classmethod
    def members_with(cls, tx: Tx, org_id: str, roles: frozenset[Role]) -> list[MemberOut]:
        """The members of ``org_id`` whose role is one of ``roles`` (who is told of an event)."""
        return [member for member in cls.members_in(tx, org_id) if member.role in roles]

    def add_member(self, principal: Principal, org_id: str, email: str, role: Role) -> MemberOut:
        """Add a user by email (created if new) with ``role``."""
        with self.db.transaction() as tx:
            user = self.users.ensure(tx, email)
            if not tx.execute(_Q.insert_membership, org_id, user.id, role.value):
                raise Conflict(f"{email} is already a member of this organisation", code=ErrorCode.ALREADY_MEMBER)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.added",
                              target=user.id, details={"role": role.value, "email": email})
            row = tx.fetch_one(_Q.member, org_id, user.id)
        assert row is not None
        return MemberOut(**row)

    def change_role(self, principal: Principal, org_id: str, user_id: str, role: Role) -> MemberOut:
        """Change a member's role; the last admin cannot be demoted."""
        with self.db.transaction() as tx:
            current = self._lock_member(tx, org_id, user_id)
            if current == Role.ADMIN and role != Role.ADMIN:
                self._guard_last_admin(tx, org_id)
            tx.execute(_Q.set_member_role, role.value, org_id, user_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.role_changed",
                              target=user_id, details={"from": current, "to": role.value})
            row = tx.fetch_one(_Q.member, org_id, user_id)
        assert row is not None
        return MemberOut(**row)

    def remove_member(self, principal: Principal, org_id: str, user_id: str) -> None:
        """Remove a member; the last admin cannot leave."""
        with self.db.transaction() as tx:
            current = self._lock_member(tx, org_id, user_id)
            if current == Role.ADMIN:
                self._guard_last_admin(tx, org_id)
            tx.execute(_Q.delete_member, org_id, user_id)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="member.removed",
                              target=user_id, details={"role": current})

    @staticmethod
    def _lock_member(tx: Tx, org_id: str, user_id: str) -> str:
        """The member's role (as stored), with every membership row of the org locked, so that
        two concurrent demotions cannot both pass the last-admin check."""
        for row in tx.fetch_all(_Q.lock_members, org_id):
            if row["user_id"] == user_id:
                return str(row["role"])
        raise NotFound("no such member in this organisation")

    @staticmethod
    def _guard_last_admin(tx: Tx, org_id: str) -> None:
        if int(tx.fetch_val(_Q.count_admins, org_id)) <= 1:
            raise Conflict("an organisation must keep at least one admin", code=ErrorCode.LAST_ADMIN)

    # -- API keys --------------------------------------------------------------
    def create_api_key(self, principal: Principal, org_id: str, name: str, role: Role) -> ApiKeyCreated:
        """A new member-role API key for the org (data-plane keys come from installs)."""
        if role == Role.DATAPLANE:
            raise Unprocessable("data-plane keys are issued per deployment at install time",
                                details=[{"path": "role", "message": "dataplane is not allowed here"}])
        with self.db.transaction() as tx:
            key, secret = self.identity.create_api_key(tx, org_id=org_id, name=name, role=role, actor=principal.actor)
        return ApiKeyCreated(**key.model_dump(), key=secret)

    def list_api_keys(self, org_id: str) -> list[ApiKeyOut]:
        """Every key of the org (never the secrets)."""
        return self.identity.api_keys(org_id)

    def revoke_api_key(self, principal: Principal, org_id: str, key_id: str) -> ApiKeyOut:
        """Revoke a key; 404 when the org has no such live key."""
        with self.db.transaction() as tx:
            key = self.identity.revoke_api_key(tx, org_id=org_id, key_id=key_id, actor=principal.actor)
        if key is None:
            raise NotFound("no such active API key in this organisation")
        return key

    # -- preferences (memory Level 5) ------------------------------------------
    def get_preferences(self, org_id: str) -> PreferencesOut:
        """The org's preferences ({} until set)."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.preferences_of_org, org_id)
        return PreferencesOut(**row) if row else PreferencesOut(org_id=org_id, data={}, updated_at=None)

    def put_preferences(self, principal: Principal, org_id: str, data: dict[str, Any]) -> PreferencesOut:
        """Replace the preferences."""
        encoded = json.dumps(data, sort_keys=True)
        if len(encoded.encode()) > MAX_PREFERENCES_BYTES:
            raise Unprocessable(f"preferences must be at most {MAX_PREFERENCES_BYTES} bytes of JSON",
                                details=[{"path": "data", "message": "too large"}])
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.put_preferences, org_id, encoded, principal.actor)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="preferences.updated",
                              target=org_id, details={"keys": sorted(data)})
        assert row is not None
        return PreferencesOut(**row)

    # -- for catalog --
    def org_name(self, tx: Tx, org_id: str) -> str | None:
        """The org's name, or None when there is no such org; read in the caller's transaction."""
        name = tx.fetch_val(_Q.catalog_org_name, org_id)
        return None if name is None else str(name)

    def org_names(self, tx: Tx, org_ids: Sequence[str]) -> dict[str, str]:
        """The names of those of ``org_ids`` that exist, by id; read in the caller's transaction."""
        if not org_ids:
            return {}
        found = tx.fetch_all(_Q.catalog_org_names, list(org_ids))
        return {str(row["id"]): str(row["name"]) for row in found}

    def ensure_system_org(self, tx: Tx, owner_email: str, name: str) -> tuple[str, str]:
        """The org ``name`` that the system user ``owner_email`` owns, made on first use (the user,
        too) with that user as its admin, in the caller's transaction (which serialises callers).
        Returns the org's id and the user's audit actor."""
        user = self.users.ensure(tx, owner_email)
        actor = Principal(kind="user", subject=user.id).actor
        org_id = tx.fetch_val(_Q.catalog_system_org, user.id, name)
        if org_id is None:
            org_id = new_id("org")
            tx.execute(_Q.catalog_insert_system_org, org_id, name, user.id)
            tx.execute(_Q.catalog_insert_system_admin, org_id, user.id)
            self.audit.append(tx, org_id=org_id, actor=actor, action="org.created", target=org_id,
                              details={"name": name})
            self.audit.append(tx, org_id=org_id, actor=actor, action="member.added", target=user.id,
                              details={"role": "admin"})
        return str(org_id), actor

    # -- for notifications --
    @staticmethod
    def members_in(tx: Tx, org_id: str) -> list[MemberOut]:
        """Every member of ``org_id`` with their role and email, in ``tx`` (notification recipients,
        a Slack user mapped by email)."""
        return [MemberOut(**row) for row in tx.fetch_all(_Q.members_of_org, org_id)]
