"""The webhooks context's public API: other contexts, operations and the data plane import from here only."""

from shared.webhooks.destinations import DestinationPolicy, SystemResolver
from shared.webhooks.models import (
    DeliveryAttemptOut,
    DispatchOut,
    DispatchRequest,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
)
from shared.webhooks.service import WebhookService

__all__ = [
    "DeliveryAttemptOut",
    "DestinationPolicy",
    "DispatchOut",
    "DispatchRequest",
    "SystemResolver",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookOut",
    "WebhookService",
]
