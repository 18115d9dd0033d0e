"""Who is calling, what they belong to, and the roles of SPEC §3."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainValidator,
    RootModel,
    StringConstraints,
    WithJsonSchema,
)

from shared.kernel.redacted import RedactOnInput, ShownData


class Role(StrEnum):
    """Roles inside an org; ``dataplane`` is only ever held by a data-plane API key."""

    ADMIN = "admin"
    DEVELOPER = "developer"
    OPERATOR = "operator"
    APPROVER = "approver"
    VIEWER = "viewer"
    DATAPLANE = "dataplane"


#: The roles a member or an org API key may hold: every role but ``dataplane``.
ORG_ROLES = (Role.ADMIN, Role.DEVELOPER, Role.OPERATOR, Role.APPROVER, Role.VIEWER)
_ORG_ROLE_NAMES = ", ".join(r.value for r in ORG_ROLES)


def _org_role(value: object) -> Role:
    if isinstance(value, str) and value in {r.value for r in ORG_ROLES}:
        return Role(value)
    raise ValueError(f"must be one of {_ORG_ROLE_NAMES}")


#: A role given in a request (a member's, an API key's): one of the five org roles, else 422.
OrgRole = Annotated[Role, PlainValidator(_org_role),
                    WithJsonSchema({"type": "string", "enum": [r.value for r in ORG_ROLES]})]


@dataclass(frozen=True)
class User:
    """A user record (its email is unique whatever its case)."""

    id: str
    email: str
    display_name: str | None
    platform_admin: bool
    created_at: datetime


@dataclass(frozen=True)
class Membership:
    """One org a user belongs to, and the role held there."""

    org_id: str
    org_name: str
    role: Role


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user (by access token) or an org API key."""

    kind: Literal["user", "api_key"]
    subject: str  # user id or api key id
    email: str | None = None
    platform_admin: bool = False
    key_org_id: str | None = None
    key_role: Role | None = None
    deployment_id: str | None = None
    # Read with the user in the authentication's one statement, so that the operation needs no
    # second round trip: every membership (when the operation asked for them), and the role held
    # in the org the request addresses (org id, role or None for a non-member).
    memberships: tuple[Membership, ...] | None = None
    org_role: tuple[str, Role | None] | None = None

    def known_role(self, org_id: str) -> tuple[bool, Role | None]:
        """(known, role) for ``org_id`` without a statement: an API key's one role, or what
        authentication loaded; (False, None) when it must be read."""
        if self.kind == "api_key":
            return True, self.key_role if self.key_org_id == org_id else None
        if self.memberships is not None:
            return True, next((m.role for m in self.memberships if m.org_id == org_id), None)
        if self.org_role is not None and self.org_role[0] == org_id:
            return True, self.org_role[1]
        return False, None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"user:{self.subject}" if self.kind == "user" else f"api_key:{self.subject}"


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# A name is shown to every member and audited: a credential pasted into one is replaced.
Name = Annotated[str, StringConstraints(min_length=1, max_length=120), RedactOnInput]


class DevGrant(StrictModel):
    grant_type: Literal["dev"]
    email: EmailStr


class RefreshGrant(StrictModel):
    grant_type: Literal["refresh_token"]
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class TokenRequest(RootModel[Annotated[DevGrant | RefreshGrant, Field(discriminator="grant_type")]]):
    """Either grant, told apart by ``grant_type``."""


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str | None = None


class UserOut(BaseModel):
    id: str
    email: str
    display_name: str | None = None
    platform_admin: bool = False


class MembershipOut(BaseModel):
    org_id: str
    org_name: str
    role: Role


class MeOut(BaseModel):
    kind: str
    user: UserOut | None = None
    api_key_id: str | None = None
    org_id: str | None = None
    role: Role | None = None
    memberships: list[MembershipOut] = Field(default_factory=list)


class OrgCreate(StrictModel):
    name: Name


class OrgOut(BaseModel):
    id: str
    name: str
    created_by: str
    created_at: datetime
    role: Role | None = Field(default=None, description="The caller's role in this org.")


class MemberAdd(StrictModel):
    email: EmailStr
    role: OrgRole


class MemberUpdate(StrictModel):
    role: OrgRole


class MemberOut(BaseModel):
    org_id: str
    user_id: str
    email: str
    role: Role
    created_at: datetime


class ApiKeyCreate(StrictModel):
    name: Name
    role: OrgRole = Role.OPERATOR


class ApiKeyOut(BaseModel):
    id: str
    org_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret: shown once, stored only as a hash.")


class Preferences(StrictModel):
    """Level 5 memory: an org's preferences, free-form but bounded."""

    data: dict[str, Any] = Field(default_factory=dict)


class PreferencesOut(BaseModel):
    org_id: str
    data: ShownData = Field(description="The preferences, values under secret-named keys and credential "
                                        "shapes in text shown as [REDACTED].")
    updated_at: datetime | None = None
