"""Webhooks: the event types an org can subscribe to, and the API's request and response shapes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator

from shared.identity import StrictModel
from shared.kernel.redacted import RedactOnInput, ShownText, ShownUrl


class WebhookEvent(StrEnum):
    """Every event type the platform delivers; the one place the set is defined."""

    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_REMEDIATED = "run.remediated"  # issue 15: a run ended after an approved action executed
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_DECIDED = "approval.decided"
    DEPLOYMENT_READY = "deployment.ready"
    DEPLOYMENT_FAILED = "deployment.failed"
    DEPLOYMENT_UNREACHABLE = "deployment.unreachable"
    # -- for billing --
    BILLING_BUDGET_THRESHOLD = "billing.budget_threshold"  # the month's spend passed 50, 80 or 100 % of the budget
    BILLING_FROZEN = "billing.frozen"  # the org's spend was frozen (kill switch or unpaid invoice)
    BILLING_PAYMENT_FAILED = "billing.payment_failed"  # an invoice's payment failed: pay within the grace period
    BILLING_RUN_REFUNDED = "billing.run_refunded"  # (part of) a run's charge was refunded


WEBHOOK_EVENTS: frozenset[str] = frozenset(e.value for e in WebhookEvent)


class WebhookStatus(StrEnum):
    """``disabled``: the receiver answered 410 Gone; nothing more is sent to it."""

    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    """One event's delivery to one webhook: retried while ``pending``, then final."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class WebhookCreate(StrictModel):
    url: WebhookUrl = Field(description="An https URL on a public address (see docs/WEBHOOKS.md).")
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(WebhookEvent),
                                       description="The event types to deliver; at least one.")
    description: Annotated[str, StringConstraints(max_length=500), RedactOnInput] = ""

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[WebhookEvent]) -> list[WebhookEvent]:
        return sorted(set(events))


class WebhookOut(BaseModel):
    id: str
    org_id: str
    url: ShownUrl = Field(description="Where deliveries go; its user-info and query values shown as [REDACTED].")
    events: list[str]
    description: ShownText
    status: WebhookStatus
    disabled_reason: ShownText | None = None
    disabled_at: datetime | None = None
    created_by: str
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (whsec_...): shown once, stored encrypted.")


class DeliveryAttemptOut(BaseModel):
    """One HTTP attempt to deliver one event to the webhook."""

    id: str
    delivery_id: str
    event_id: str = Field(description="The webhook-id header: the same on every attempt of an event.")
    event_type: str
    attempt: int = Field(description="1 for the first attempt of this delivery, 2 for its first retry, ...")
    status_code: int | None = Field(default=None, description="The receiver's HTTP status; none when no "
                                                              "response arrived.")
    error: ShownText | None = None
    response_excerpt: ShownText | None = Field(default=None, description="The start of the receiver's response body.")
    duration_ms: int
    started_at: datetime
    finished_at: datetime
    delivery_status: DeliveryStatus = Field(description="Where the delivery stands now.")
    next_attempt_at: datetime | None = Field(default=None, description="When the next retry is due, "
                                                                       "while the delivery is pending.")


class DispatchRequest(StrictModel):
    limit: int = Field(default=100, ge=1, le=1000)


class DispatchOut(BaseModel):
    claimed: int
    delivered: int
    retrying: int
    failed: int
    disabled: int
