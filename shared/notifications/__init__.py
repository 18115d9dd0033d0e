"""The notifications context's public API: in-app notifications, email and Slack deliveries, Slack actions."""

from shared.notifications.models import (
    Delivery,
    DeliveryReport,
    NotificationOut,
    NotificationQuery,
    NotificationSettingsIn,
    NotificationSettingsOut,
    SlackActionOut,
)
from shared.notifications.ports import DeliveryError, EmailSender, SlackDirectory, SlackPoster
from shared.notifications.service import NotificationService
from shared.notifications.slack import signature as slack_signature

__all__ = [
    "Delivery",
    "DeliveryError",
    "DeliveryReport",
    "EmailSender",
    "NotificationOut",
    "NotificationQuery",
    "NotificationService",
    "NotificationSettingsIn",
    "NotificationSettingsOut",
    "SlackActionOut",
    "SlackDirectory",
    "SlackPoster",
    "slack_signature",
]
