"""Idempotency-Key replay for mutating POSTs (the first response is stored and replayed).

Stored responses are sealed by the secret box, bound to their (scope, key): a response that
shows a secret once (an API key, a webhook's signing secret) can be replayed to the caller who
retries, yet never rests in the database in clear.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, Unprocessable
from shared.kernel.secret_box import SecretBox

_Q = Queries("shared.identity")


@dataclass(frozen=True)
class StoredResponse:
    """A completed request's status and JSON body."""

    status: int
    body: Any


class IdempotencyStore:
    """Claim a key before running the operation; record its response afterwards."""

    def __init__(self, db: Database, box: SecretBox, *, ttl_seconds: int) -> None:
        self.db = db
        self.box = box
        self.ttl_seconds = ttl_seconds

    def begin(self, scope: str, key: str, method: str, path: str, request_hash: str) -> StoredResponse | None:
        """None when the caller should run the operation; a stored response to replay otherwise."""
        with self.db.transaction() as tx:
            tx.execute(_Q.expire_idempotency_key, scope, key, self.ttl_seconds)
            if tx.execute(_Q.claim_idempotency_key, scope, key, method, path, request_hash):
                return None
            row = tx.fetch_one(_Q.idempotency_key, scope, key)
        if row is None:  # expired and removed between the two statements: treat as in flight
            raise Conflict("a request with this Idempotency-Key is in progress", code=ErrorCode.IDEMPOTENCY_IN_PROGRESS)
        if (row["method"], row["path"], row["request_hash"]) != (method, path, request_hash):
            raise Unprocessable("this Idempotency-Key was used with a different request",
                                code=ErrorCode.IDEMPOTENCY_KEY_REUSED)
        if row["status_code"] is None:
            raise Conflict("a request with this Idempotency-Key is in progress", code=ErrorCode.IDEMPOTENCY_IN_PROGRESS)
        body = json.loads(self.box.unseal(bytes(row["response_sealed"]), context=_context(scope, key)))
        return StoredResponse(int(row["status_code"]), body)

    def complete(self, scope: str, key: str, status: int, body: Any) -> None:
        """Record the response to replay."""
        with self.db.transaction() as tx:
            sealed = self.box.seal(json.dumps(body).encode(), context=_context(scope, key))
            tx.execute(_Q.complete_idempotency_key, status, sealed, scope, key)

    def abandon(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed on our side, so a retry runs again."""
        with self.db.transaction() as tx:
            tx.execute(_Q.abandon_idempotency_key, scope, key)


def _context(scope: str, key: str) -> str:
    # Binds a sealed response to its row: moved to another caller's key, it no longer opens.
    return f"idempotency:{len(scope)}:{scope}:{key}"
