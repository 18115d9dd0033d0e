"""Users, tokens and API keys: turning a bearer credential into a ``Principal``."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.audit import AuditLog
from shared.identity.models import Membership, Principal, Role
from shared.identity.ports import TokenIssuer, TokenVerifier
from shared.kernel.db.database import Database, Row, Tx
from shared.kernel.errors import BadRequest, ErrorCode, Unauthorized
from shared.kernel.ids import new_id, new_secret

API_KEY_PREFIX = "mk"
REFRESH_PREFIX = "rt"
_MEMBERSHIPS_COLUMN = (
    ", COALESCE((SELECT json_agg(json_build_object('org_id', m.org_id, 'org_name', o.name, 'role', m.role) "
    "ORDER BY o.created_at, o.id) FROM memberships m JOIN orgs o ON o.id = m.org_id "
    "WHERE m.user_id = u.id), '[]') AS memberships")
# The user (by id for the local issuer's tokens, by email for an identity provider's), the role
# held in the org a request addresses, and on request every membership: one statement.
_USER_QUERIES = {
    (by, memberships): "SELECT u.id, u.email, u.platform_admin, "
    "(SELECT role FROM memberships WHERE user_id = u.id AND org_id = %s) AS org_role"
    f"{_MEMBERSHIPS_COLUMN if memberships else ''} FROM users u WHERE {where}"
    for by, where in (("id", "u.id = %s"), ("email", "lower(u.email) = lower(%s)"))
    for memberships in (False, True)
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


class Users:
    """User records, keyed by a case-insensitive email."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure(self, tx: Tx, email: str, *, platform_admin: bool | None = None) -> Row:
        """Find or create the user with ``email``; optionally set the platform-admin flag."""
        row = tx.fetch_one("SELECT * FROM users WHERE lower(email) = lower(%s)", email)
        if row is None:
            tx.execute("INSERT INTO users (id, email, platform_admin) VALUES (%s, %s, %s) "
                       "ON CONFLICT (lower(email)) DO NOTHING", new_id("usr"), email, bool(platform_admin))
            row = tx.fetch_one("SELECT * FROM users WHERE lower(email) = lower(%s)", email)
        elif platform_admin is not None and row["platform_admin"] != platform_admin:
            tx.execute("UPDATE users SET platform_admin = %s WHERE id = %s", platform_admin, row["id"])
            row["platform_admin"] = platform_admin
        assert row is not None
        return row

    def get(self, user_id: str) -> Row | None:
        """A user by id."""
        with self.db.read() as tx:
            return tx.fetch_one("SELECT * FROM users WHERE id = %s", user_id)


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
        tx.execute("INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) "
                   "VALUES (%s, %s, %s, %s, %s)", token_id, family_id, user_id, secret_hash(secret),
                   datetime.now(UTC) + timedelta(seconds=self.refresh_ttl))
        return f"{REFRESH_PREFIX}.{token_id}.{secret}"

    def dev_grant(self, email: str, *, platform_admin: bool | None = None) -> TokenPair:
        """Local mode: tokens for ``email``, creating the user (the CLI may set the admin flag)."""
        issuer = self._require_issuer("dev")
        with self.db.transaction() as tx:
            user = self.users.ensure(tx, email, platform_admin=platform_admin)
            refresh = self._new_refresh(tx, user["id"], new_id("fam"))
        access = issuer.issue(subject=user["id"], email=user["email"], ttl_seconds=self.access_ttl)
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
            row = tx.fetch_one("SELECT r.*, u.email FROM refresh_tokens r JOIN users u ON u.id = r.user_id "
                               "WHERE r.id = %s FOR UPDATE OF r", token_id)
            if row is None or not hmac.compare_digest(row["token_hash"], secret_hash(secret)):
                raise Unauthorized("the refresh token is not valid", code=ErrorCode.INVALID_GRANT)
            if row["revoked_at"] is not None:
                raise Unauthorized("the refresh token was revoked", code=ErrorCode.INVALID_GRANT)
            if row["used_at"] is not None:
                # Reuse of a rotated token means it leaked: end every session of that family.
                tx.execute("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = %s "
                           "AND revoked_at IS NULL", row["family_id"])
                reused = True
            elif row["expires_at"] <= datetime.now(UTC):
                raise Unauthorized("the refresh token has expired", code=ErrorCode.INVALID_GRANT)
            else:
                tx.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = %s", token_id)
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
                user = tx.fetch_one(_USER_QUERIES["id", memberships], org_id, claims.subject)
            else:
                # An identity provider's user is known by email, and created on first sight.
                if not claims.email:
                    raise Unauthorized("the identity provider's token carries no email", code=ErrorCode.INVALID_TOKEN)
                query = _USER_QUERIES["email", memberships]
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
            row = tx.fetch_one("SELECT id, org_id, role, secret_hash, deployment_id, revoked_at "
                               "FROM api_keys WHERE id = %s", key_id)
        if row is None or not hmac.compare_digest(row["secret_hash"], secret_hash(secret)):
            raise Unauthorized("the API key is not valid", code=ErrorCode.INVALID_API_KEY)
        if row["revoked_at"] is not None:
            raise Unauthorized("the API key was revoked", code=ErrorCode.INVALID_API_KEY)
        return Principal(kind="api_key", subject=row["id"], key_org_id=row["org_id"], key_role=Role(row["role"]),
                         deployment_id=row["deployment_id"])

    # -- API keys ------------------------------------------------------------
    def create_api_key(self, tx: Tx, *, org_id: str, name: str, role: Role, actor: str,
                       deployment_id: str | None = None) -> tuple[Row, str]:
        """Store a new key's hash; returns the row and the secret (shown once)."""
        key_id, secret = new_id("key"), new_secret()
        row = tx.fetch_one(
            "INSERT INTO api_keys (id, org_id, name, role, secret_hash, deployment_id, created_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, org_id, name, role, created_at, revoked_at",
            key_id, org_id, name, role.value, secret_hash(secret), deployment_id, actor)
        assert row is not None
        self.audit.append(tx, org_id=org_id, actor=actor, action="api_key.created", target=key_id,
                          details={"name": name, "role": role.value, "deployment_id": deployment_id})
        return row, f"{API_KEY_PREFIX}.{key_id}.{secret}"

    def revoke_api_key(self, tx: Tx, *, org_id: str, key_id: str, actor: str) -> Row | None:
        """Revoke a key of ``org_id``; None when the org has no such live key."""
        row = tx.fetch_one("UPDATE api_keys SET revoked_at = now() WHERE id = %s AND org_id = %s "
                           "AND revoked_at IS NULL RETURNING id, org_id, name, role, created_at, revoked_at",
                           key_id, org_id)
        if row is not None:
            self.audit.append(tx, org_id=org_id, actor=actor, action="api_key.revoked", target=key_id,
                              details={})
        return row


def token_response(pair: TokenPair) -> dict[str, Any]:
    """The OAuth-style token response body."""
    body: dict[str, Any] = {"access_token": pair.access_token, "token_type": "Bearer",
                            "expires_in": pair.expires_in}
    if pair.refresh_token:
        body["refresh_token"] = pair.refresh_token
    return body
