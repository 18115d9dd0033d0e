"""The webhooks context's public API: other contexts, operations and the data plane import from here only."""

# -- for notifications: Slack messages go out through the same checked, pinned POST --
from shared.webhooks.delivery import PostResult, post
from shared.webhooks.destinations import (
    DestinationPolicy,
    DestinationRefused,
    SystemResolver,
)
from shared.webhooks.models import (
    DeliveryAttemptOut,
    DispatchOut,
    DispatchRequest,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
)
from shared.webhooks.service import EmittedEvent, WebhookService

__all__ = [
    "DeliveryAttemptOut",
    "DestinationPolicy",
    "DispatchOut",
    "DispatchRequest",
    "EmittedEvent",
    "SystemResolver",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookOut",
    "WebhookService",
]
# -- for notifications --
__all__ += ["DestinationRefused", "PostResult", "post"]
