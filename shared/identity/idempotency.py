"""Idempotency-Key replay for mutating POSTs (the first response is stored and replayed).

Stored responses are sealed (envelope encryption, ``shared.secrets``) with the data key of the org
the request addressed (``/orgs/{org_id}/…``; the platform's key for requests outside an org),
bound to their (scope, key): a response that shows a secret once (an API key, a webhook's signing
secret) can be replayed to the caller who retries, yet never rests in the database in clear. A
replay goes back to the caller who made the request, so it is not audited as a secret read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, Unprocessable
from shared.kernel.secret_box import SecretBoxError
from shared.secrets import PLATFORM, SecretKeys

_Q = Queries("shared.identity")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredResponse:
    """A completed request's status and JSON body."""

    status: int
    body: Any


class IdempotencyStore:
    """Claim a key before running the operation; record its response afterwards."""

    def __init__(self, db: Database, secrets: SecretKeys, *, ttl_seconds: int) -> None:
        self.db = db
        self.secrets = secrets
        self.ttl_seconds = ttl_seconds

    def begin(self, scope: str, key: str, method: str, path: str, request_hash: str, *,
              org_id: str | None = None) -> StoredResponse | None:
        """None when the caller should run the operation; a stored response to replay otherwise.

        ``org_id``: the org the request addresses, whose data key seals its response.
        """
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
        try:
            body = json.loads(self.secrets.open(org_id or PLATFORM, _PURPOSE, _subject(scope, key),
                                                bytes(row["response_sealed"])))
        except SecretBoxError:
            # A response we can no longer open (its key ring retired) is forgotten: the request
            # runs as a new one rather than failing for the rest of the key's life.
            _log.warning("a stored idempotent response does not open; it is forgotten")
            with self.db.transaction() as tx:
                tx.execute(_Q.forget_idempotency_key, scope, key)
                if tx.execute(_Q.claim_idempotency_key, scope, key, method, path, request_hash):
                    return None
            raise Conflict("a request with this Idempotency-Key is in progress",
                           code=ErrorCode.IDEMPOTENCY_IN_PROGRESS) from None
        return StoredResponse(int(row["status_code"]), body)

    def complete(self, scope: str, key: str, status: int, body: Any, *, org_id: str | None = None) -> None:
        """Record the response to replay (``org_id`` as ``begin`` was given it)."""
        sealed = self.secrets.seal(org_id or PLATFORM, _PURPOSE, _subject(scope, key), json.dumps(body).encode())
        with self.db.transaction() as tx:
            tx.execute(_Q.complete_idempotency_key, status, sealed, scope, key)

    def abandon(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed on our side, so a retry runs again."""
        with self.db.transaction() as tx:
            tx.execute(_Q.abandon_idempotency_key, scope, key)


_PURPOSE = "idempotency"


def _subject(scope: str, key: str) -> str:
    # Binds a sealed response to its row: moved to another caller's key, it no longer opens. With
    # the purpose, "idempotency:<subject>" was the platform key ring's context (older rows open).
    return f"{len(scope)}:{scope}:{key}"
