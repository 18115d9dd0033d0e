"""Tokens and the caller's identity: ``POST /auth/token`` and ``GET /me``."""

from __future__ import annotations

from functions.operation import Call, operation
from shared.identity import MeOut, TokenOut, TokenRequest


@operation("POST", "/auth/token", summary="Issue or refresh tokens", tags=["auth"], auth=False,
           body=TokenRequest, response=TokenOut, max_body=4096)
def issue_token(call: Call) -> TokenOut:
    return call.services.identity.grant(call.body.root)


@operation("GET", "/me", summary="Describe the caller", tags=["auth"], response=MeOut, memberships=True)
def get_me(call: Call) -> MeOut:
    return call.services.identity.describe(call.caller)
