"""Tokens and the caller's identity: ``POST /auth/token`` and ``GET /me``."""

from __future__ import annotations

from functions.operation import Call, operation
from shared.identity import MeOut, TokenOut, TokenRequest
from shared.kernel.errors import ErrorCode


@operation("POST", "/auth/token", summary="Issue or refresh tokens", tags=["auth"], auth=False,
           body=TokenRequest, response=TokenOut, max_body=4096,
           errors={400: ErrorCode.UNSUPPORTED_GRANT_TYPE,
                   401: (ErrorCode.INVALID_GRANT, ErrorCode.REFRESH_TOKEN_REUSED)})
def issue_token(call: Call) -> TokenOut:
    return call.services.identity.grant(call.body.root)


@operation("GET", "/me", summary="Describe the caller", tags=["auth"], response=MeOut, memberships=True)
def get_me(call: Call) -> MeOut:
    return call.services.identity.describe(call.caller)
