"""The identity context's public API: other contexts, operations and the data plane import from here only.

Who may do what is decided by ``decide`` (``access.py``, docs/AUTHORISATION.md); the caller's role
in an org comes from ``OrgService.role_of`` or, inside the caller's transaction and without a
round trip of its own, ``OrgService.member_roles``. Another context never reads ``memberships``.
"""

from shared.identity.access import (
    ADMIN,
    ANY_MEMBER,
    APPROVERS,
    DEPLOYERS,
    ORG_NOT_FOUND,
    PUBLISHERS,
    REVIEWERS,
    RUNNERS,
    Need,
    decide,
)
from shared.identity.idempotency import IdempotencyStore, StoredResponse
from shared.identity.models import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    DevGrant,
    MemberAdd,
    MemberOut,
    Membership,
    MembershipOut,
    MemberUpdate,
    MeOut,
    OrgCreate,
    OrgOut,
    Preferences,
    PreferencesOut,
    Principal,
    RefreshGrant,
    Role,
    StrictModel,
    TokenOut,
    TokenRequest,
    User,
    UserOut,
)
from shared.identity.orgs import MemberRoles, OrgService
from shared.identity.ports import TokenClaims, TokenIssuer, TokenVerifier
from shared.identity.push_auth import PushAuth
from shared.identity.rate_limits import RateLimiter
from shared.identity.service import IdentityService, TokenPair, Users

__all__ = [
    "ADMIN",
    "ANY_MEMBER",
    "APPROVERS",
    "DEPLOYERS",
    "ORG_NOT_FOUND",
    "PUBLISHERS",
    "REVIEWERS",
    "RUNNERS",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyOut",
    "DevGrant",
    "IdempotencyStore",
    "IdentityService",
    "MeOut",
    "MemberAdd",
    "MemberOut",
    "MemberRoles",
    "MemberUpdate",
    "Membership",
    "MembershipOut",
    "Need",
    "OrgCreate",
    "OrgOut",
    "OrgService",
    "Preferences",
    "PreferencesOut",
    "Principal",
    "PushAuth",
    "RateLimiter",
    "RefreshGrant",
    "Role",
    "StoredResponse",
    "StrictModel",
    "TokenClaims",
    "TokenIssuer",
    "TokenOut",
    "TokenPair",
    "TokenRequest",
    "TokenVerifier",
    "User",
    "UserOut",
    "Users",
    "decide",
]
