"""Notifications: the caller's in-app notifications, the org's channels, Slack's signed button callbacks."""

from __future__ import annotations

from functions.operation import ADMIN, Call, Reply, operation
from shared.kernel.errors import ErrorCode
from shared.kernel.pagination import Page
from shared.notifications import (
    NotificationOut,
    NotificationQuery,
    NotificationSettingsIn,
    NotificationSettingsOut,
    SlackActionOut,
)


@operation("GET", "/me/notifications", summary="List my notifications", tags=["notifications"],
           query=NotificationQuery, response=Page[NotificationOut], user=True)
def list_notifications(call: Call) -> Page[NotificationOut]:
    return call.services.notifications.page(call.caller.subject, call.query)


@operation("POST", "/me/notifications/{notification_id}/read", summary="Mark a notification read",
           tags=["notifications"], response=NotificationOut, idempotent=False, user=True)
def read_notification(call: Call) -> NotificationOut:
    return call.services.notifications.mark_read(call.caller.subject, call.params["notification_id"])


@operation("GET", "/orgs/{org_id}/notification-settings", summary="Read the org's notification channels",
           tags=["notifications"], roles=ADMIN, response=NotificationSettingsOut)
def get_notification_settings(call: Call) -> NotificationSettingsOut:
    return call.services.notifications.settings(call.org_id)


@operation("PUT", "/orgs/{org_id}/notification-settings", summary="Change the org's notification channels",
           tags=["notifications"], roles=ADMIN, body=NotificationSettingsIn, response=NotificationSettingsOut)
def put_notification_settings(call: Call) -> NotificationSettingsOut:
    return call.services.notifications.put_settings(call.caller, call.org_id, call.body)


@operation("POST", "/integrations/slack/actions", summary="Slack's signed Approve/Reject callbacks",
           tags=["notifications"], auth=False, response=SlackActionOut, idempotent=False,
           errors={400: ErrorCode.BAD_REQUEST, 401: ErrorCode.BAD_SIGNATURE, 409: ErrorCode.REPLAYED},
           headers={"X-Slack-Signature": "Slack's v0 signature of the body.",
                    "X-Slack-Request-Timestamp": "When Slack sent the request (Unix seconds)."})
def slack_actions(call: Call) -> Reply | SlackActionOut:
    headers = {name: call.request.headers.get(name, "") for name in ("X-Slack-Signature", "X-Slack-Request-Timestamp")}
    return call.services.notifications.slack_action(headers, call.raw_body)
