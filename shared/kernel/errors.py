"""Errors that carry their meaning: HTTP status, a stable code from one catalogue, and whether
retrying helps.

Every ``code`` a caller can see is a member of :class:`ErrorCode`, with its meaning beside it;
raise sites name a member, never a free string, so a typo is a type error and the catalogue is
the documentation of what a client may meet.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from shared.kernel.redaction import redact, redact_text


class ErrorCode(StrEnum):
    """The stable ``error.code`` values of the API, each with what it means."""

    # Generic codes, one per status (the default of each error class below).
    BAD_REQUEST = "bad_request"  # the request cannot be understood as sent
    UNAUTHORIZED = "unauthorized"  # no credential, or one that does not prove an identity
    FORBIDDEN = "forbidden"  # the caller is known but may not do this
    NOT_FOUND = "not_found"  # no such resource, or one the caller may not know exists
    METHOD_NOT_ALLOWED = "method_not_allowed"  # the path exists, the method does not
    CONFLICT = "conflict"  # the resource's current state does not allow the change
    PAYLOAD_TOO_LARGE = "payload_too_large"  # the body is over the operation's limit
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # a JSON body sent as something else
    VALIDATION_FAILED = "validation_failed"  # the body, query or path breaks the schema (details[].path)
    RATE_LIMITED = "rate_limited"  # too many requests: retry after Retry-After
    UNAVAILABLE = "unavailable"  # a dependency is down: retry after Retry-After
    INTERNAL = "internal"  # a fault of ours (a 500): details[].request_id names it in our logs
    DATABASE_UNAVAILABLE = "database_unavailable"  # the database is down or unreachable: retry after Retry-After

    # Requests and credentials.
    MALFORMED_JSON = "malformed_json"  # the body is not JSON
    INVALID_CURSOR = "invalid_cursor"  # a pagination cursor that this API did not issue
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an access token that does not verify
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - an access token past its expiry: refresh it
    INVALID_API_KEY = "invalid_api_key"  # an API key that is unknown, revoked or malformed
    INVALID_GRANT = "invalid_grant"  # a token grant that does not hold (unknown, expired refresh token)
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"  # a grant type this mode does not offer
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105 - a used refresh token again: family revoked
    USER_REQUIRED = "user_required"  # the operation needs a signed-in user, not an API key
    BAD_IDEMPOTENCY_KEY = "bad_idempotency_key"  # an Idempotency-Key header that is empty or too long
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # the same key with a different request
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"  # the first request with this key is still running

    # Orgs and members.
    ALREADY_MEMBER = "already_member"  # the user is a member of the org already
    LAST_ADMIN = "last_admin"  # the change would leave the org without an admin

    # Registry and catalog.
    INVALID_MANIFEST = "invalid_manifest"  # a manifest that breaks the schema (details[].path)
    NAME_TAKEN = "name_taken"  # an agent name another publisher holds
    NAME_MISMATCH = "name_mismatch"  # a version's manifest names another agent
    VERSION_EXISTS = "version_exists"  # versions are immutable: this one is published already
    VERSION_NOT_NEWER = "version_not_newer"  # a new version must be greater than the latest
    NOT_PENDING = "not_pending"  # the listing or version is not waiting for review
    NOT_REVIEWABLE = "not_reviewable"  # the caller's org has not installed the agent
    OWN_AGENT = "own_agent"  # a publisher cannot review its own agent
    ALREADY_SUSPENDED = "already_suspended"  # the listing is suspended already
    AGENT_SUSPENDED = "agent_suspended"  # a suspended agent cannot be installed or run
    # Agent packages (issue 14): a version's code archive (shared/kernel/package_archive.py).
    PACKAGE_NOT_ARCHIVE = "package_not_archive"  # the body is not a gzip'd tar nor a zip
    PACKAGE_TOO_LARGE = "package_too_large"  # over the package size limit, packed or unpacked
    PACKAGE_TOO_MANY_FILES = "package_too_many_files"  # more members than a package may hold
    PACKAGE_PATH_ESCAPES = "package_path_escapes"  # a member path leaves the root (../, absolute, drive, backslash)
    PACKAGE_LINK = "package_link"  # a symbolic or hard link in the archive
    PACKAGE_SPECIAL_FILE = "package_special_file"  # a device file or a FIFO in the archive
    PACKAGE_NO_MANIFEST = "package_no_manifest"  # no manifest.yaml at the project's root, or not a mapping
    PACKAGE_MANIFEST_MISMATCH = "package_manifest_mismatch"  # the package's manifest is not this version's
    PACKAGE_DIGEST_MISMATCH = "package_digest_mismatch"  # the bytes' sha256 is not the one expected
    PACKAGE_IMMUTABLE = "package_immutable"  # the version has another package already, or is reviewed

    # Installs and deployments.
    INVALID_STATE = "invalid_state"  # the deployment's state does not allow the change
    NOT_INSTALLED = "not_installed"  # no deployment of the agent in the org
    NOT_BYOC = "not_byoc"  # a bundle exists only for BYOC deployments
    SAME_VERSION = "same_version"  # an upgrade to the version already installed
    NOTHING_PENDING = "nothing_pending"  # no upgrade waits for consent
    DEPLOYMENT_NOT_READY = "deployment_not_ready"  # the deployment cannot take runs in its state
    JOB_START_FAILED = "job_start_failed"  # the data plane's job could not be started

    # Runs and the data plane.
    RUN_FINISHED = "run_finished"  # the run has ended: it cannot change any more
    LEASE_TOKEN_REQUIRED = "lease_token_required"  # noqa: S105 - a data-plane call without its lease token
    TASK_NOT_VISIBLE = "task_not_visible"  # the task belongs to another deployment
    LEASE_LOST = "lease_lost"  # the lease expired or the task finished: stop working on it

    # Webhooks.
    WEBHOOK_URL_REFUSED = "webhook_url_refused"  # the destination is not a public HTTPS address
    WEBHOOK_LIMIT = "webhook_limit"  # the org has as many webhooks as it may have

    # Billing (issue 16).
    SPEND_FROZEN = "spend_frozen"  # the org's spend is frozen (kill switch or unpaid invoice): no new runs
    BUDGET_EXCEEDED = "budget_exceeded"  # the run's maximum charge does not fit what is left of the monthly budget
    INVALID_SIGNATURE = "invalid_signature"  # a payment provider's webhook whose signature does not verify
    NO_PAYOUT_ACCOUNT = "no_payout_account"  # the developer org has not onboarded a Stripe Connect account
    REFUND_EXCEEDS_CHARGE = "refund_exceeds_charge"  # the refund would pass what is left of the run's charge
    # Approvals and notifications (issue 15).
    APPROVAL_DECIDED = "approval_decided"  # the approval was decided already: details[0].decision is the winner
    ALREADY_VOTED = "already_voted"  # this approver decided the approval already (it waits for others)
    STARTER_MAY_NOT_DECIDE = "starter_may_not_decide"  # the run's starter may not decide its actions (org policy)
    NOT_APPROVED = "not_approved"  # the gated call's approval is not approved: it may not execute
    STALE_APPROVAL = "stale_approval"  # the call differs from the approved action (its hash): refused
    BAD_SIGNATURE = "bad_signature"  # a Slack callback whose signature or timestamp does not verify
    REPLAYED = "replayed"  # a signed callback seen before


class AppError(Exception):
    """Base of every error the API reports to a caller."""

    status: int = 400
    code: ErrorCode = ErrorCode.BAD_REQUEST
    retryable: bool = False
    #: Seconds a client should wait before retrying (sent as ``Retry-After``); retryable errors only.
    retry_after: int | None = None

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None,
                 code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """The SPEC error body; a message or detail that quotes a caller's input never repeats a
        credential in it (shared/kernel/redaction.py)."""
        return {"error": {"code": str(self.code), "message": redact_text(self.message),
                          "details": redact(self.details)}}

    def headers(self) -> dict[str, str]:
        """Response headers the error carries (``Retry-After`` for the retryable ones)."""
        if self.retryable and self.retry_after:
            return {"Retry-After": str(self.retry_after)}
        return {}


class BadRequest(AppError):
    status, code = 400, ErrorCode.BAD_REQUEST


class Unauthorized(AppError):
    status, code = 401, ErrorCode.UNAUTHORIZED


class Forbidden(AppError):
    status, code = 403, ErrorCode.FORBIDDEN


class NotFound(AppError):
    status, code = 404, ErrorCode.NOT_FOUND


class MethodNotAllowed(AppError):
    status, code = 405, ErrorCode.METHOD_NOT_ALLOWED


class Conflict(AppError):
    status, code = 409, ErrorCode.CONFLICT


class PayloadTooLarge(AppError):
    status, code = 413, ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(AppError):
    status, code = 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE


class Unprocessable(AppError):
    status, code = 422, ErrorCode.VALIDATION_FAILED


class TooManyRequests(AppError):
    status, code, retryable, retry_after = 429, ErrorCode.RATE_LIMITED, True, 1

    def __init__(self, message: str, *, retry_after: int, details: list[dict[str, Any]] | None = None,
                 code: ErrorCode | None = None) -> None:
        super().__init__(message, details=details, code=code)
        self.retry_after = max(1, retry_after)  # whole seconds until the caller's window ends


class InternalError(AppError):
    """A fault of ours, answered as 500 at the operation boundary (details name the request)."""

    status, code = 500, ErrorCode.INTERNAL


class Unavailable(AppError):
    status, code, retryable, retry_after = 503, ErrorCode.UNAVAILABLE, True, 2


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached (down, restarting, or no connection to be had in time)."""

    code = ErrorCode.DATABASE_UNAVAILABLE
