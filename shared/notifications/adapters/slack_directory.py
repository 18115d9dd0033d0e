"""Slack's Web API ``users.info``: the email on a Slack user's profile (scope ``users:read.email``)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request


class SlackWebDirectory:
    def __init__(self, api_url: str = "https://slack.com/api", *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout

    def email_of(self, bot_token: str, user_id: str) -> str | None:
        """The user's profile email; None when Slack does not give one (or answers an error)."""
        url = f"{self.api_url}/users.info?{urllib.parse.urlencode({'user': user_id})}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bot_token}"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - configured URL
                answer = json.loads(response.read(1_000_000))
        except (OSError, ValueError):
            return None
        if not isinstance(answer, dict) or not answer.get("ok"):
            return None
        email = ((answer.get("user") or {}).get("profile") or {}).get("email")
        return email if isinstance(email, str) and email else None
