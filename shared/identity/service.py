"""Users, tokens and API keys: turning a bearer credential into a ``Principal``."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.audit import AuditLog
from shared.identity.models import (
    ApiKeyOut,
    DevGrant,
    Membership,
    MembershipOut,
    MeOut,
    Principal,
    RefreshGrant,
    Role,
    TokenOut,
    User,
    UserOut,
)
from shared.identity.ports import TokenIssuer, TokenVerifier
from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import BadRequest, ErrorCode, Unauthorized
from shared.kernel.ids import new_id, new_secret

API_KEY_PREFIX = "mk"
REFRESH_PREFIX = "rt"
_Q = Queries("shared.identity")
# The user (by id for the local issuer's tokens, by email for an identity provider's), the role
# held in the org a request addresses, and on request every membership: one statement.
_PRINCIPAL_QUERIES = {
    ("id", False): "principal_by_id",
    ("email", False): "principal_by_email",
    ("id", True): "principal_by_id_with_memberships",
    ("email", True): "principal_by_email_with_memberships",
}


def _json_list(value: Any) -> list[dict[str, Any]]:
    """A JSON array column, whether the driver decoded it or not."""
    return list(json.loads(value) if isinstance(value, str) else value)


def secret_hash(secret: str) -> str:
    """Secrets are 256-bit random, so a plain SHA-256 is enough (no password stretching)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str, prefix: str) -> tuple[str, str] | None:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class TokenPair:
    """What ``POST /auth/token`` returns."""

    access_token: str
    refresh_token: str | None
    expires_in: int

    def response(self) -> TokenOut:
        """The OAuth-style token response body."""
        return TokenOut(access_token=self.access_token, token_type="Bearer",  # noqa: S106 - not a secret
                        expires_in=self.expires_in, refresh_token=self.refresh_token or None)


class Users:
    """User records, keyed by a case-insensitive email."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure(self, tx: Tx, email: str, *, platform_admin: bool | None = None) -> User:
        """Find or create the user with ``email``; optionally set the platform-admin flag."""
        row = tx.fetch_one(_Q.user_by_email, email)
        if row is None:
            tx.execute(_Q.insert_user, new_id("usr"), email, bool(platform_admin))
            row = tx.fetch_one(_Q.user_by_email, email)
        elif platform_admin is not None and row["platform_admin"] != platform_admin:
            tx.execute(_Q.set_platform_admin, platform_admin, row["id"])
            row["platform_admin"] = platform_admin
        assert row is not None
        return User(**row)

    def get(self, user_id: str) -> User | None:
        """A user by id."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.user_by_id, user_id)
        return None if row is None else User(**row)


class IdentityService:
    """Issues local tokens, rotates refresh tokens, and authenticates bearer credentials."""

    def __init__(self, db: Database, users: Users, audit: AuditLog, verifier: TokenVerifier,
                 issuer: TokenIssuer | None, *, access_ttl: int, refresh_ttl: int) -> None:
        self.db = db
        self.users = users
        self.audit = audit
        self.verifier = verifier
        self.issuer = issuer
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    # -- tokens ------------------------------------------------------------
    def _require_issuer(self, grant: str) -> TokenIssuer:
        if self.issuer is None:
            raise BadRequest(f"grant '{grant}' is only available in local mode; "
                             "sign in with the configured identity provider", code=ErrorCode.UNSUPPORTED_GRANT_TYPE)
        return self.issuer

    def _new_refresh(self, tx: Tx, user_id: str, family_id: str) -> str:
        token_id, secret = new_id("rtk"), new_secret()
        tx.execute(_Q.insert_refresh_token, token_id, family_id, user_id, secret_hash(secret),
                   datetime.now(UTC) + timedelta(seconds=self.refresh_ttl))
        return f"{REFRESH_PREFIX}.{token_id}.{secret}"

    def dev_grant(self, email: str, *, platform_admin: bool | None = None) -> TokenPair:
        """Local mode: tokens for ``email``, creating the user (the CLI may set the admin flag)."""
        issuer = self._require_issuer("dev")
        with self.db.transaction() as tx:
            user = self.users.ensure(tx, email, platform_admin=platform_admin)
            refresh = self._new_refresh(tx, user.id, new_id("fam"))
        access = issuer.issue(subject=user.id, email=user.email, ttl_seconds=self.access_ttl)
        return TokenPair(access, refresh, self.access_ttl)

    def refresh_grant(self, token: str) -> TokenPair:
        """Rotate a refresh token; presenting a used one revokes its whole family."""
        issuer = self._require_issuer("refresh_token")
        parts = _split(token, REFRESH_PREFIX)
        if parts is None:
            raise Unauthorized("the refresh token is malformed", code=ErrorCode.INVALID_GRANT)
        token_id, secret = parts
        reused = False
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.refresh_token_for_update, token_id)
            if row is None or not hmac.compare_digest(row["token_hash"], secret_hash(secret)):
                raise Unauthorized("the refresh token is not valid", code=ErrorCode.INVALID_GRANT)
            if row["revoked_at"] is not None:
                raise Unauthorized("the refresh token was revoked", code=ErrorCode.INVALID_GRANT)
            if row["used_at"] is not None:
                # Reuse of a rotated token means it leaked: end every session of that family.
                tx.execute(_Q.revoke_refresh_family, row["family_id"])
                reused = True
            elif row["expires_at"] <= datetime.now(UTC):
                raise Unauthorized("the refresh token has expired", code=ErrorCode.INVALID_GRANT)
            else:
                tx.execute(_Q.mark_refresh_token_used, token_id)
                refresh = self._new_refresh(tx, row["user_id"], row["family_id"])
        if reused:
            raise Unauthorized("the refresh token was already used; every token of its family is revoked",
                               code=ErrorCode.REFRESH_TOKEN_REUSED)
        access = issuer.issue(subject=row["user_id"], email=row["email"], ttl_seconds=self.access_ttl)
        return TokenPair(access, refresh, self.access_ttl)

    # -- authentication ----------------------------------------------------
    def authenticate(self, bearer: str, *, org_id: str | None = None, memberships: bool = False) -> Principal:
        """The principal behind an ``Authorization: Bearer`` credential.

        For a user, the same statement also reads the role held in ``org_id`` (the org the
        request addresses) and, when ``memberships`` is set, every membership.
        """
        if bearer.startswith(API_KEY_PREFIX + "."):
            return self._authenticate_key(bearer)
        claims = self.verifier.verify(bearer)
        with self.db.read() as tx:
            if self.issuer is not None:
                user = tx.fetch_one(getattr(_Q, _PRINCIPAL_QUERIES["id", memberships]), org_id, claims.subject)
            else:
                # An identity provider's user is known by email, and created on first sight; only
                # an email the provider verified may stand for someone (anyone can type one in).
                if not claims.email:
                    raise Unauthorized("the identity provider's token carries no email", code=ErrorCode.INVALID_TOKEN)
                if not claims.email_verified:
                    raise Unauthorized("the identity provider has not verified the token's email",
                                       code=ErrorCode.INVALID_TOKEN)
                query = getattr(_Q, _PRINCIPAL_QUERIES["email", memberships])
                user = tx.fetch_one(query, org_id, claims.email)
                if user is None:
                    self.users.ensure(tx, claims.email)
                    user = tx.fetch_one(query, org_id, claims.email)
        if user is None:
            raise Unauthorized("the token's user does not exist", code=ErrorCode.INVALID_TOKEN)
        loaded = (tuple(Membership(org_id=m["org_id"], org_name=m["org_name"], role=Role(m["role"]))
                        for m in _json_list(user["memberships"])) if memberships else None)
        org_role = (org_id, Role(user["org_role"]) if user["org_role"] else None) if org_id is not None else None
        return Principal(kind="user", subject=user["id"], email=user["email"],
                         platform_admin=bool(user["platform_admin"]), memberships=loaded, org_role=org_role)

    def _authenticate_key(self, bearer: str) -> Principal:
        parts = _split(bearer, API_KEY_PREFIX)
        if parts is None:
            raise Unauthorized("the API key is malformed", code=ErrorCode.INVALID_API_KEY)
        key_id, secret = parts
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.api_key_for_authentication, key_id)
        if row is None or not hmac.compare_digest(row["secret_hash"], secret_hash(secret)):
            raise Unauthorized("the API key is not valid", code=ErrorCode.INVALID_API_KEY)
        if row["revoked_at"] is not None:
            raise Unauthorized("the API key was revoked", code=ErrorCode.INVALID_API_KEY)
        return Principal(kind="api_key", subject=row["id"], key_org_id=row["org_id"], key_role=Role(row["role"]),
                         deployment_id=row["deployment_id"])

    def grant(self, grant: DevGrant | RefreshGrant) -> TokenOut:
        """``POST /auth/token``: either grant's tokens, as the token response."""
        pair = self.dev_grant(grant.email) if isinstance(grant, DevGrant) else self.refresh_grant(grant.refresh_token)
        return pair.response()

    @staticmethod
    def describe(principal: Principal) -> MeOut:
        """``GET /me``: the caller, and a user's memberships (loaded with the user at authentication)."""
        if principal.kind == "api_key":
            return MeOut(kind="api_key", api_key_id=principal.subject, org_id=principal.key_org_id,
                         role=principal.key_role)
        user = UserOut(id=principal.subject, email=principal.email or "", platform_admin=principal.platform_admin)
        if principal.memberships is None:
            raise RuntimeError("describe needs the memberships loaded at authentication (memberships=True)")
        memberships = [MembershipOut(org_id=m.org_id, org_name=m.org_name, role=m.role)
                       for m in principal.memberships]
        return MeOut(kind="user", user=user, memberships=memberships)

    # -- API keys ------------------------------------------------------------
    def create_api_key(self, tx: Tx, *, org_id: str, name: str, role: Role, actor: str,
                       deployment_id: str | None = None) -> tuple[ApiKeyOut, str]:
        """Store a new key's hash in the caller's transaction; returns the key and its secret
        (shown once)."""
        key_id, secret = new_id("key"), new_secret()
        row = tx.fetch_one(_Q.insert_api_key, key_id, org_id, name, role.value, secret_hash(secret), deployment_id,
                           actor)
        assert row is not None
        self.audit.append(tx, org_id=org_id, actor=actor, action="api_key.created", target=key_id,
                          details={"name": name, "role": role.value, "deployment_id": deployment_id})
        return ApiKeyOut(**row), f"{API_KEY_PREFIX}.{key_id}.{secret}"

    def revoke_api_key(self, tx: Tx, *, org_id: str, key_id: str, actor: str) -> ApiKeyOut | None:
        """Revoke a key of ``org_id`` in the caller's transaction; None when the org has no such live key."""
        row = tx.fetch_one(_Q.revoke_api_key, key_id, org_id)
        if row is None:
            return None
        self.audit.append(tx, org_id=org_id, actor=actor, action="api_key.revoked", target=key_id, details={})
        return ApiKeyOut(**row)

    def api_keys(self, org_id: str) -> list[ApiKeyOut]:
        """Every key of the org, oldest first (never the secrets)."""
        with self.db.read() as tx:
            return [ApiKeyOut(**row) for row in tx.fetch_all(_Q.api_keys_of_org, org_id)]
