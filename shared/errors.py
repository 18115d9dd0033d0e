"""Errors that carry their meaning: HTTP status, a stable code, and whether retrying helps."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error the API reports to a caller."""

    status: int = 400
    code: str = "bad_request"
    retryable: bool = False

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """The SPEC error body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(AppError):
    status, code = 400, "bad_request"


class Unauthorized(AppError):
    status, code = 401, "unauthorized"


class Forbidden(AppError):
    status, code = 403, "forbidden"


class NotFound(AppError):
    status, code = 404, "not_found"


class MethodNotAllowed(AppError):
    status, code = 405, "method_not_allowed"


class Conflict(AppError):
    status, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(AppError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(AppError):
    status, code = 422, "validation_failed"


class TooManyRequests(AppError):
    status, code, retryable = 429, "rate_limited", True


class Unavailable(AppError):
    status, code, retryable = 503, "unavailable", True
