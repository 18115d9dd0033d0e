"""The client CLI's error codes: one catalogue, as the API's (``shared.kernel.errors.ErrorCode``).

An :class:`~functions.cli_api.ApiError`'s ``code`` is always one of:

- an :class:`ErrorCode` member: the API's answer, parsed by :func:`api_code`; also what a check of
  the CLI raises when it finds what the API would report (``not_found``, ``not_installed``,
  ``name_taken``, ``version_exists``, ``unauthorized``, ``token_expired``), so that one string has
  one meaning whoever found it;
- a :class:`CliCode` member: a failure only the CLI can meet (no platform to reach, a file it
  cannot read, a choice it cannot make for you);
- an :class:`OAuthCode` member: the OIDC issuer's answer during the device sign-in (RFC 8628) or
  a refresh there (RFC 6749), parsed by :func:`oauth_code`;
- a :data:`RawCode`: a code outside these catalogues, carried as sent (a server newer than this
  CLI), or the HTTP status as a string (``"502"``) when the answer held no JSON error at all (a
  proxy's page). Only :func:`api_code`, :func:`oauth_code` and :func:`status_code` make one.

The three enums share no value (a test checks it), and ``--json`` prints the code's string, so
scripts see the same strings as before the catalogue.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NewType, TypeAlias

from shared.kernel.errors import ErrorCode


class CliCode(StrEnum):
    """The codes the CLI itself originates, each with what it means (docs/CLI.md lists them)."""

    UNREACHABLE = "unreachable"  # the platform or the sign-in service did not answer, or a stream broke off
    OIDC_UNAVAILABLE = "oidc_unavailable"  # the OIDC issuer offers no device sign-in (no discovery or endpoint)
    OIDC_REQUIRED = "oidc_required"  # the platform runs in gcp mode: login needs --issuer and --client-id
    EMAIL_REQUIRED = "email_required"  # the platform runs in local mode: login needs --email
    NO_ORG = "no_org"  # no current organisation, and not exactly one to take as it
    AMBIGUOUS = "ambiguous"  # more than one of your organisations has that name: name it by id
    NO_RUNS = "no_runs"  # a command about "the latest run" in an organisation that has none
    BAD_CONFIG = "bad_config"  # install's --config file or a --set KEY=VALUE is not a config object
    BAD_INPUT = "bad_input"  # run's --input file cannot be read as a JSON object


class OAuthCode(StrEnum):
    """What an OIDC issuer answers at its device authorization and token endpoints (the names
    RFC 8628 section 3.5 and RFC 6749 section 5.2 give them). ``invalid_grant`` and
    ``unsupported_grant_type`` are :class:`ErrorCode` members: the API uses the OAuth names."""

    # RFC 8628 section 3.5: the device flow's poll.
    AUTHORIZATION_PENDING = "authorization_pending"  # the user has not finished signing in yet: poll again
    SLOW_DOWN = "slow_down"  # polling too fast: wait 5 s more between polls
    ACCESS_DENIED = "access_denied"  # the user refused the sign-in
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - the device code expired before the user signed in
    # RFC 6749 section 5.2: any token (or device authorization) request.
    INVALID_REQUEST = "invalid_request"  # a parameter is missing, repeated or malformed
    INVALID_CLIENT = "invalid_client"  # the issuer does not know the client (--client-id)
    UNAUTHORIZED_CLIENT = "unauthorized_client"  # the client may not use this grant type
    INVALID_SCOPE = "invalid_scope"  # a scope the issuer does not offer to this client


#: A code outside the catalogues, as the server sent it, or an HTTP status as text (see above).
RawCode = NewType("RawCode", str)

#: What an error's ``code`` may be.
Code: TypeAlias = ErrorCode | CliCode | OAuthCode | RawCode


def status_code(status: int) -> RawCode:
    """The code of an error answer that carries none: its HTTP status, as text (``"502"``)."""
    return RawCode(str(status))


def api_code(raw: object, status: int) -> ErrorCode | RawCode:
    """The API's ``error.code``: its :class:`ErrorCode` member, else the string as sent, else
    (none sent) the HTTP status."""
    if not raw:
        return status_code(status)
    try:
        return ErrorCode(str(raw))
    except ValueError:
        return RawCode(str(raw))


def oauth_code(raw: object, status: int) -> OAuthCode | ErrorCode | RawCode:
    """An OIDC issuer's ``error``: its :class:`OAuthCode` member (or the :class:`ErrorCode` one of
    the same OAuth name), else the string as sent, else (none sent) the HTTP status."""
    if not raw:
        return status_code(status)
    try:
        return OAuthCode(str(raw))
    except ValueError:
        return api_code(raw, status)
