"""The notification channels the service sends through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class DeliveryError(Exception):
    """A delivery that did not go through; ``retryable`` says whether another attempt may."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class EmailSender(Protocol):
    """Sends one email; raises ``DeliveryError`` when the server refuses or cannot be reached."""

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Send a plain-text message to ``to``."""
        ...


class SlackPoster(Protocol):
    """Posts one message to a Slack incoming webhook; raises ``DeliveryError``."""

    def post(self, url: str, message: Mapping[str, Any]) -> None:
        """POST ``message`` (Block Kit JSON) to ``url``."""
        ...

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not be a Slack webhook (not a public HTTPS address), or None."""
        ...


class SlackDirectory(Protocol):
    """Who a Slack user is: their profile's email (Slack's ``users.info``)."""

    def email_of(self, bot_token: str, user_id: str) -> str | None:
        """The user's email, or None when Slack does not say."""
        ...
