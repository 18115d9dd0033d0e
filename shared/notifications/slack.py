"""Slack's request signing (api.slack.com/authentication/verifying-requests-from-slack) and the
approval message with its Approve/Reject buttons."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

#: Requests older (or newer) than this are refused: Slack's recommended window.
WINDOW_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Slack-Signature`` for a request: ``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, *, timestamp: str, sent: str, body: bytes, now: float) -> str | None:
    """None when the request is Slack's and fresh, else why not."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return "the request timestamp is not a number"
    if abs(now - stamp) > WINDOW_SECONDS:
        return "the request timestamp is outside the 5-minute window"
    if not hmac.compare_digest(signature(secret, timestamp, body), sent):
        return "the request signature does not verify"
    return None


def approval_message(summary: Mapping[str, Any], *, event: str, text: str) -> dict[str, Any]:
    """Block Kit JSON: the text, and for a request or reminder the Approve/Reject buttons whose
    value names the org and the approval."""
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if event in ("approval.requested", "approval.reminder") and summary.get("approval_id"):
        value = f"{summary['org_id']}:{summary['approval_id']}"
        blocks.append({"type": "actions", "block_id": "approval", "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "reject", "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}}]})
    return {"text": text, "blocks": blocks}
