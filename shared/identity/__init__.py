"""The identity context's public API: other contexts, operations and the data plane import from here only."""

from shared.identity.idempotency import IdempotencyStore
from shared.identity.models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    MemberAdd,
    MemberOut,
    MembershipOut,
    MemberUpdate,
    MeOut,
    OrgCreate,
    OrgOut,
    Preferences,
    PreferencesOut,
    Principal,
    Role,
    StrictModel,
    UserOut,
)
from shared.identity.orgs import MemberRoles, OrgService
from shared.identity.ports import TokenIssuer, TokenVerifier
from shared.identity.push_auth import PushAuth
from shared.identity.service import IdentityService, Users, token_response

__all__ = [
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyOut",
    "IdempotencyStore",
    "IdentityService",
    "MeOut",
    "MemberAdd",
    "MemberOut",
    "MemberRoles",
    "MemberUpdate",
    "MembershipOut",
    "OrgCreate",
    "OrgOut",
    "OrgService",
    "Preferences",
    "PreferencesOut",
    "Principal",
    "PushAuth",
    "Role",
    "StrictModel",
    "TokenIssuer",
    "TokenVerifier",
    "UserOut",
    "Users",
    "token_response",
]
