"""Slack incoming webhooks, posted through the webhooks context's checked and pinned POST (no
redirects, no proxies, only public HTTPS addresses unless loopback is allowed for tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.notifications import DeliveryError
from shared.webhooks import DestinationPolicy, DestinationRefused, post


class SlackWebhookPoster:
    def __init__(self, policy: DestinationPolicy, *, timeout: float = 10.0) -> None:
        self.policy = policy
        self.timeout = timeout

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not be a Slack webhook, or None (static checks only)."""
        try:
            self.policy.parse(url)
        except DestinationRefused as exc:
            return str(exc)
        return None

    def post(self, url: str, message: Mapping[str, Any]) -> None:
        """POST the message; Slack answers 200 ``ok``. 429 and 5xx are retried, other 4xx are not."""
        try:
            destination, address = self.policy.check(url)
        except DestinationRefused as exc:
            raise DeliveryError(f"the Slack webhook URL is refused: {exc}", retryable=False) from exc
        result = post(destination, address, headers={"Content-Type": "application/json"},
                      body=json.dumps(message).encode(), timeout=self.timeout)
        if result.status_code is None:
            raise DeliveryError(result.error or "no response")
        if result.status_code >= 300:
            raise DeliveryError(f"Slack answered {result.status_code}",
                                retryable=result.status_code == 429 or result.status_code >= 500)
