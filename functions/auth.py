"""Tokens and the caller's identity: ``POST /auth/token`` and ``GET /me``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, EmailStr, Field, RootModel

from functions.operation import Call, operation
from shared.identity import MembershipOut, MeOut, StrictModel, UserOut, token_response


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


@operation("POST", "/auth/token", summary="Issue or refresh tokens", tags=["auth"], auth=False,
           body=TokenRequest, response=TokenOut, max_body=4096)
def issue_token(call: Call) -> TokenOut:
    grant = call.body.root
    identity = call.services.identity
    pair = identity.dev_grant(grant.email) if isinstance(grant, DevGrant) else identity.refresh_grant(
        grant.refresh_token)
    return TokenOut(**token_response(pair))


@operation("GET", "/me", summary="Describe the caller", tags=["auth"], response=MeOut, memberships=True)
def get_me(call: Call) -> MeOut:
    principal = call.caller
    if principal.kind == "api_key":
        return MeOut(kind="api_key", api_key_id=principal.subject, org_id=principal.key_org_id,
                     role=principal.key_role)
    user = UserOut(id=principal.subject, email=principal.email or "", platform_admin=principal.platform_admin)
    assert principal.memberships is not None  # loaded with the user at authentication (memberships=True)
    memberships = [MembershipOut(org_id=m.org_id, org_name=m.org_name, role=m.role)
                   for m in principal.memberships]
    return MeOut(kind="user", user=user, memberships=memberships)
