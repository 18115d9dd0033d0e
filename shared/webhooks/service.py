"""Webhooks: subscriptions, the transactional outbox of events, and the dispatcher that delivers them.

* ``emit(tx, ...)`` writes the event and one delivery per subscribed webhook in the caller's
  transaction, so an event exists exactly when the change that caused it committed.
* ``deliver_due(limit)`` claims due deliveries (``FOR UPDATE SKIP LOCKED``, so any number of
  dispatchers can run), leases them, and POSTs each one. Every attempt is recorded. A 2xx
  delivers; a 410 disables the webhook (audited); anything else retries with exponential backoff
  and jitter until the schedule runs out. A dispatcher that dies mid-attempt loses nothing: the
  lease runs out and the delivery is claimed again (so receivers see at-least-once delivery and
  dedupe on ``webhook-id``).
* ``WebhookDispatcher`` runs ``deliver_due`` in a background thread (local mode's scheduler); in
  gcp mode the same call is behind ``POST /internal/webhooks/dispatch``.

Neither the signing secret nor a signature is ever logged; URLs are logged by host only, since
receivers often put their own tokens in the path or query.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from shared.audit import AuditLog
from shared.identity import Principal
from shared.kernel.db.database import Database, Deferred, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Conflict, ErrorCode, NotFound, Unprocessable
from shared.kernel.ids import new_id
from shared.kernel.pagination import Keyset, Page, next_page
from shared.kernel.redaction import redact
from shared.kernel.secret_box import SecretBoxError
from shared.secrets import SecretKeys
from shared.webhooks.delivery import (
    PostResult,
    event_body,
    new_signing_secret,
    post,
    secret_key,
    signed_headers,
)
from shared.webhooks.destinations import DestinationPolicy, DestinationRefused
from shared.webhooks.models import (
    DeliveryAttemptOut,
    DeliveryStatus,
    DispatchOut,
    WebhookCreated,
    WebhookEvent,
    WebhookOut,
    WebhookStatus,
)

_log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:webhooks"
MAX_WEBHOOKS_PER_ORG = 50
_MAX_ERROR_CHARS = 1000

_Q = Queries("shared.webhooks")


@dataclass(frozen=True)
class RetrySchedule:
    """How long to wait after each failed attempt; the length bounds the number of attempts.

    The default makes 8 attempts over about 17 hours: 5 s, 30 s, 2 min, 15 min, 1 h, 4 h, 12 h
    between them. Each wait is scaled by a random factor in ``[1 - jitter, 1 + jitter]`` so
    deliveries that failed together (a receiver's outage) do not all retry in the same second.
    """

    delays_seconds: tuple[float, ...] = (5, 30, 120, 900, 3600, 4 * 3600, 12 * 3600)
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if any(d < 0 for d in self.delays_seconds):
            raise ValueError("retry delays must not be negative")

    @property
    def max_attempts(self) -> int:
        """The first attempt plus one per delay."""
        return len(self.delays_seconds) + 1

    def delay_after(self, attempt: int) -> float | None:
        """Seconds to wait after failed ``attempt`` (1-based); None when it was the last one."""
        if attempt >= self.max_attempts:
            return None
        nominal = self.delays_seconds[attempt - 1]
        return nominal * secrets.SystemRandom().uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class _Claimed:
    id: str
    event_id: str
    webhook_id: str
    org_id: str
    attempt: int
    lease_token: str
    event_type: str
    data: dict[str, Any]
    occurred_at: datetime
    url: str
    secret_sealed: bytes


# What a webhook's signing secret is sealed for (with the org as owner and the webhook id as
# subject); "webhook:<id>" was also the platform key ring's context, so older rows still open.
SEALED_FOR = "webhook"


def _clip(text: str | None, limit: int = _MAX_ERROR_CHARS) -> str | None:
    if text is None:
        return None
    cleaned = "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in text)
    return cleaned[:limit]


class EmittedEvent:
    """What ``WebhookService.emit`` queued. Its statement is sent without waiting; asking for the
    event's id waits for the answer (so ask only when the id is needed)."""

    __slots__ = ("_answer",)

    def __init__(self, answer: Deferred) -> None:
        self._answer = answer

    @property
    def event_id(self) -> str | None:
        """The event's id (the ``webhook-id`` receivers see), None if no webhook was subscribed
        and nothing was written."""
        row = self._answer.one()
        return None if row is None else str(row["event_id"])


class WebhookService:
    """Webhook subscriptions of an org, the event outbox, and delivery."""

    def __init__(self, db: Database, audit: AuditLog, secrets: SecretKeys, destinations: DestinationPolicy, *,
                 schedule: RetrySchedule | None = None, timeout_seconds: float = 10.0, concurrency: int = 8) -> None:
        self.db = db
        self.audit = audit
        self.secrets = secrets
        self.destinations = destinations
        self.schedule = schedule or RetrySchedule()
        self.timeout_seconds = timeout_seconds
        self.concurrency = max(1, concurrency)

    # -- subscriptions ---------------------------------------------------------------------
    def create(self, principal: Principal, org_id: str, *, url: str, events: Sequence[WebhookEvent | str],
               description: str = "") -> WebhookCreated:
        """A new webhook and its signing secret (returned once, stored only encrypted)."""
        try:
            destination, _ = self.destinations.check(url)
        except DestinationRefused as exc:
            raise Unprocessable(f"the webhook URL is not allowed: {exc.reason}", code=ErrorCode.WEBHOOK_URL_REFUSED,
                                details=[{"path": "url", "message": exc.reason}]) from exc
        event_types = sorted({WebhookEvent(e).value for e in events})
        if not event_types:
            raise Unprocessable("subscribe to at least one event",
                                details=[{"path": "events", "message": "at least one event type"}])
        webhook_id = new_id("wh")
        secret = new_signing_secret()
        sealed = self.secrets.seal(org_id, SEALED_FOR, webhook_id, secret.encode())
        with self.db.transaction() as tx:
            count = int(tx.fetch_val(_Q.count_webhooks, org_id) or 0)
            if count >= MAX_WEBHOOKS_PER_ORG:
                raise Conflict(f"an organisation may have at most {MAX_WEBHOOKS_PER_ORG} webhooks",
                               code=ErrorCode.WEBHOOK_LIMIT)
            row = tx.fetch_one(_Q.insert_webhook, webhook_id, org_id, destination.url, json.dumps(event_types),
                               description, sealed, principal.actor)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="webhook.created", target=webhook_id,
                              details={"host": destination.host, "events": event_types})
        assert row is not None
        return WebhookCreated.model_validate({**row, "secret": secret})

    def page(self, org_id: str, *, limit: int, cursor: str | None) -> Page[WebhookOut]:
        """The org's webhooks, newest first (never their secrets)."""
        after = Keyset.after(cursor)
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.webhooks_page, org_id, *after.params, limit + 1)
        items, next_cursor = next_page(rows, limit, lambda r: Keyset.of(r["created_at"], r["id"]))
        return Page[WebhookOut](items=[WebhookOut.model_validate(r) for r in items], next_cursor=next_cursor)

    def get(self, org_id: str, webhook_id: str) -> WebhookOut:
        """One webhook of the org; 404 for another org's."""
        with self.db.read() as tx:
            row = tx.fetch_one(_Q.webhook, webhook_id, org_id)
        if row is None:
            raise NotFound("webhook not found")
        return WebhookOut.model_validate(row)

    def delete(self, principal: Principal, org_id: str, webhook_id: str) -> None:
        """Remove a webhook with its encrypted secret, pending deliveries and delivery history."""
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.delete_webhook, webhook_id, org_id)
            if row is None:
                raise NotFound("webhook not found")
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="webhook.deleted", target=webhook_id,
                              details={"host": urlsplit(row["url"]).hostname, "events": row["events"]})

    def attempts_page(self, org_id: str, webhook_id: str, *, limit: int, cursor: str | None
                      ) -> Page[DeliveryAttemptOut]:
        """The webhook's delivery attempts, newest first by ``(started_at, id)``; 404 for another
        org's webhook."""
        after = Keyset.after(cursor)
        self.get(org_id, webhook_id)
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.attempts_page, webhook_id, org_id, *after.params, limit + 1)
        items, next_cursor = next_page(rows, limit, lambda r: Keyset.of(r["started_at"], r["id"]))
        return Page[DeliveryAttemptOut](items=[DeliveryAttemptOut.model_validate(r) for r in items],
                                        next_cursor=next_cursor)

    # -- the outbox ----------------------------------------------------------------------------
    def emit(self, tx: Tx, *, org_id: str, event: WebhookEvent | str, data: Mapping[str, Any]) -> EmittedEvent:
        """Queue ``event`` for every active webhook of ``org_id`` subscribed to it, in ``tx``.

        Call it inside the transaction that makes the change the event reports: the event and
        its deliveries commit or roll back with it. One statement, held back until the
        transaction's next statement or its commit (``Tx.defer``); the ``event_id`` of what this
        returns reads the event id. ``data`` must be JSON-serialisable (datetimes and
        other scalars become strings). An unknown event type is a programming error
        (``ValueError``).
        """
        event_type = WebhookEvent(event).value
        new_event = new_id("msg")
        delivery_prefix = "whd_" + new_event.removeprefix("msg_")[:10]
        # Payloads leave the platform: the redaction rule holds for them as for logs.
        return EmittedEvent(tx.defer(_Q.emit, org_id, event_type, new_event, org_id, event_type,
                                     json.dumps(redact(dict(data)), default=str), delivery_prefix, org_id))

    # -- delivery ------------------------------------------------------------------------------
    def _lease_seconds(self, batch: int) -> float:
        # Long enough for every delivery of the batch to run its POST, with room to record it.
        rounds = math.ceil(batch / self.concurrency)
        return self.timeout_seconds * (rounds + 1) + 30

    def claim(self, limit: int) -> list[_Claimed]:
        """Lease up to ``limit`` due deliveries (each counts as its next attempt)."""
        with self.db.transaction() as tx:
            rows = tx.fetch_all(_Q.claim_due, limit, self._lease_seconds(limit))
        return [_Claimed(id=r["id"], event_id=r["event_id"], webhook_id=r["webhook_id"], org_id=r["org_id"],
                         attempt=int(r["attempts"]), lease_token=r["lease_token"], event_type=r["event_type"],
                         data=r["data"], occurred_at=r["occurred_at"], url=r["url"],
                         secret_sealed=bytes(r["secret_sealed"])) for r in rows]

    def deliver_due(self, limit: int = 100) -> DispatchOut:
        """Deliver up to ``limit`` due deliveries, ``concurrency`` at a time; returns what happened."""
        claimed = self.claim(limit)
        if not claimed:
            return DispatchOut(claimed=0, delivered=0, retrying=0, failed=0, disabled=0)
        with concurrent.futures.ThreadPoolExecutor(min(self.concurrency, len(claimed)),
                                                   thread_name_prefix="webhook-delivery") as pool:
            outcomes = list(pool.map(self._deliver_one, claimed))
        return DispatchOut(
            claimed=len(claimed),
            delivered=outcomes.count(DeliveryStatus.DELIVERED),
            retrying=outcomes.count(DeliveryStatus.PENDING),
            failed=outcomes.count(DeliveryStatus.FAILED),
            disabled=outcomes.count(WebhookStatus.DISABLED),
        )

    def _deliver_one(self, item: _Claimed) -> DeliveryStatus | WebhookStatus | None:
        try:
            return self._attempt(item)
        except Exception:  # noqa: BLE001 - one broken delivery must not stop the batch; the lease retries it
            _log.exception("webhook delivery %s failed unexpectedly", item.id,
                           extra={"fields": {"delivery_id": item.id, "webhook_id": item.webhook_id}})
            return None

    def _attempt(self, item: _Claimed) -> DeliveryStatus | WebhookStatus | None:
        started_at = datetime.now(UTC)
        result = self._send(item)
        finished_at = datetime.now(UTC)
        code = result.status_code
        delay: float | None = None
        if code is not None and 200 <= code < 300:
            outcome: DeliveryStatus | WebhookStatus = DeliveryStatus.DELIVERED
        elif code == 410:
            outcome = WebhookStatus.DISABLED
        else:
            delay = self.schedule.delay_after(item.attempt)
            outcome = DeliveryStatus.FAILED if delay is None else DeliveryStatus.PENDING
        error = result.error
        if error is None and code is not None and not 200 <= code < 300:
            error = f"the receiver answered HTTP {code}"
        with self.db.transaction() as tx:
            if outcome == DeliveryStatus.PENDING:
                updated = tx.execute(_Q.retry_delivery, delay, code, _clip(error), item.id, item.lease_token)
            else:
                final = DeliveryStatus.DELIVERED if outcome == DeliveryStatus.DELIVERED else DeliveryStatus.FAILED
                updated = tx.execute(_Q.finish_delivery, final.value, code, _clip(error), item.id,
                                     item.lease_token)
            if not updated:
                # The lease ran out and another dispatcher took the delivery, or the webhook was
                # deleted or disabled meanwhile: that one's outcome stands.
                _log.warning("webhook delivery %s lost its lease before its attempt %s was recorded", item.id,
                             item.attempt, extra={"fields": {"delivery_id": item.id}})
                return None
            tx.execute(_Q.insert_attempt, new_id("wha"), item.id, item.webhook_id, item.org_id, item.attempt, code,
                       _clip(error), _clip(result.response_excerpt), result.duration_ms, started_at, finished_at)
            if outcome == WebhookStatus.DISABLED:
                self._disable(tx, item, reason="the receiver answered 410 Gone")
        _log.info("webhook delivery %s attempt %s: %s", item.id, item.attempt, outcome.value,
                  extra={"fields": {"delivery_id": item.id, "webhook_id": item.webhook_id,
                                    "event_id": item.event_id, "status_code": code,
                                    "duration_ms": result.duration_ms}})
        return outcome

    def _send(self, item: _Claimed) -> PostResult:
        """Check the destination again, sign, and POST; a refusal is a failed attempt without a request."""
        try:
            destination = self.destinations.parse(item.url)
            address = self.destinations.resolve(destination)
        except DestinationRefused as exc:
            return PostResult(status_code=None, error=f"destination refused: {exc.reason}", response_excerpt=None,
                              duration_ms=0)
        try:
            # A secret read, audited (at most hourly per webhook, with the count of reads between).
            key = secret_key(self.secrets.open(item.org_id, SEALED_FOR, item.webhook_id, item.secret_sealed,
                                               reader=SYSTEM_ACTOR).decode())
        except (SecretBoxError, ValueError):
            _log.error("the signing secret of webhook %s cannot be opened", item.webhook_id,
                       extra={"fields": {"webhook_id": item.webhook_id}})
            return PostResult(status_code=None, error="the webhook's signing secret cannot be decrypted",
                              response_excerpt=None, duration_ms=0)
        body = event_body(item.event_type, item.occurred_at, item.data)
        timestamp = int(datetime.now(UTC).timestamp())
        headers = signed_headers(key, message_id=item.event_id, timestamp=timestamp, body=body)
        return post(destination, address, headers=headers, body=body, timeout=self.timeout_seconds)

    def _disable(self, tx: Tx, item: _Claimed, *, reason: str) -> None:
        disabled = tx.execute(_Q.disable_webhook, reason, item.webhook_id)
        if not disabled:
            return
        cancelled = tx.execute(_Q.cancel_pending_deliveries, item.webhook_id)
        self.audit.append(tx, org_id=item.org_id, actor=SYSTEM_ACTOR, action="webhook.disabled",
                          target=item.webhook_id, details={"reason": reason, "event_id": item.event_id,
                                                           "cancelled_deliveries": cancelled})

    def reseal_secrets(self, limit: int = 500) -> int:
        """Seal again, under each org's newest data key, the signing secrets an older key (or the
        platform key ring before it) sealed; at most ``limit`` per call, returns how many.

        The scheduled job behind a data-key rotation or the move from the platform key ring: it
        reads the webhooks in id order, a page at a time, and writes a row only if its sealed
        value is still the one read (a concurrent re-seal wins quietly).
        """
        done, after = 0, ""
        while done < limit:
            with self.db.read() as tx:
                rows = tx.fetch_all(_Q.sealed_secrets_page, after, 200)
            if not rows:
                break
            for row in rows:
                sealed = bytes(row["secret_sealed"])
                try:
                    fresh = self.secrets.reseal(row["org_id"], SEALED_FOR, row["id"], sealed)
                except SecretBoxError:
                    _log.error("the signing secret of webhook %s cannot be opened to re-seal it", row["id"],
                               extra={"fields": {"webhook_id": row["id"]}})
                    continue
                if fresh is None:
                    continue
                with self.db.transaction() as tx:
                    done += tx.execute(_Q.reseal_secret, fresh, row["id"], sealed)
                if done >= limit:
                    break
            after = rows[-1]["id"]
        return done

    def purge(self, *, older_than: timedelta = timedelta(days=30), batch: int = 1000) -> int:
        """Delete events (with their deliveries and attempts) older than ``older_than`` that nothing
        still waits to deliver, ``batch`` events per transaction so no purge holds long locks or a
        large undo; returns how many events went."""
        total = 0
        while True:
            with self.db.transaction() as tx:
                gone = tx.execute(_Q.purge_events, older_than.total_seconds(), batch)
            total += gone
            if gone < batch:
                return total


class WebhookDispatcher:
    """Runs ``deliver_due`` in a background thread until stopped (local mode's scheduler).

    It polls every ``poll_interval`` seconds and goes again at once while it finds full batches;
    history older than ``retention`` is purged about once an hour.
    """

    def __init__(self, service: WebhookService, *, poll_interval: float = 1.0, batch_size: int = 100,
                 retention: timedelta = timedelta(days=30), purge_every: float = 3600.0) -> None:
        self.service = service
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.retention = retention
        self.purge_every = purge_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; errors are logged and retried after the poll interval."""
        next_purge = 0.0
        while not stop.is_set():
            busy = False
            try:
                report = self.service.deliver_due(self.batch_size)
                busy = report.claimed >= self.batch_size
                now = time.monotonic()
                if now >= next_purge:
                    self.service.purge(older_than=self.retention)
                    next_purge = now + self.purge_every
            except Exception:  # noqa: BLE001 - the dispatcher outlives a database hiccup
                _log.exception("webhook dispatcher pass failed")
            if not busy:
                stop.wait(self.poll_interval)

    def start(self) -> WebhookDispatcher:
        """Start the background thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run_forever, args=(self._stop,),
                                            name="webhook-dispatcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for its current pass to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.service.timeout_seconds * 2 + 5)
            self._thread = None

