"""Notifications: in-app messages, the email and Slack outbox, the org's channel settings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from shared.identity import StrictModel

NotificationEvent = Literal["approval.requested", "approval.reminder", "approval.decided", "approval.expired",
                            "run.remediated"]


class NotificationOut(BaseModel):
    id: str
    org_id: str
    event: str
    subject: str
    body: str
    data: dict[str, Any]
    read_at: datetime | None = None
    created_at: datetime


class NotificationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)
    unread: bool = Field(default=False, description="Only notifications not yet marked read.")


class NotificationSettingsIn(StrictModel):
    """The org's channels: email on or off; Slack's incoming webhook URL and the app's signing
    secret (both stored sealed, never shown again); an empty string removes one."""

    email_enabled: bool | None = None
    slack_webhook_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    slack_signing_secret: SecretStr | None = Field(default=None, max_length=200)
    slack_bot_token: SecretStr | None = Field(default=None, max_length=400)


class NotificationSettingsOut(BaseModel):
    email_enabled: bool = True
    slack_webhook: bool = Field(default=False, description="Whether a Slack incoming webhook is set.")
    slack_signing_secret: bool = False
    slack_bot_token: bool = False


class SlackActionOut(BaseModel):
    """What Slack shows the user who clicked (an ephemeral reply)."""

    response_type: str = "ephemeral"
    replace_original: bool = False
    text: str


class DeliveryReport(BaseModel):
    delivered: int
    retried: int
    failed: int


class Delivery(BaseModel):
    """One email or Slack message in the org's outbox, and how its delivery went."""

    id: str
    channel: Literal["email", "slack"]
    destination: str
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
