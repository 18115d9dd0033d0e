"""Webhooks: subscribe an org's endpoints to events, inspect deliveries, and run the dispatcher."""

from __future__ import annotations

from functions.operation import ADMIN, Call, Reply, operation
from shared.kernel.errors import ErrorCode
from shared.kernel.pagination import Page, PageQuery
from shared.webhooks import (
    DeliveryAttemptOut,
    DispatchOut,
    DispatchRequest,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookService,
)


def _webhooks(call: Call) -> WebhookService:
    return call.services.webhooks


# Replayable with Idempotency-Key: the stored response, secret included, rests sealed (see
# shared/identity/idempotency.py), so a retried create returns the same webhook and secret.
@operation("POST", "/orgs/{org_id}/webhooks", summary="Create a webhook", tags=["webhooks"], roles=ADMIN,
           body=WebhookCreate, response=WebhookCreated, status=201,
           errors={409: ErrorCode.WEBHOOK_LIMIT, 422: ErrorCode.WEBHOOK_URL_REFUSED})
def create_webhook(call: Call) -> WebhookCreated:
    b = call.body
    return _webhooks(call).create(call.caller, call.org_id, url=b.url, events=b.events, description=b.description)


@operation("GET", "/orgs/{org_id}/webhooks", summary="List webhooks", tags=["webhooks"], roles=ADMIN,
           query=PageQuery, response=Page[WebhookOut])
def list_webhooks(call: Call) -> Page[WebhookOut]:
    return _webhooks(call).page(call.org_id, limit=call.query.limit, cursor=call.query.cursor)


@operation("GET", "/orgs/{org_id}/webhooks/{webhook_id}", summary="Read a webhook", tags=["webhooks"],
           roles=ADMIN, response=WebhookOut)
def get_webhook(call: Call) -> WebhookOut:
    return _webhooks(call).get(call.org_id, call.params["webhook_id"])


@operation("DELETE", "/orgs/{org_id}/webhooks/{webhook_id}", summary="Delete a webhook", tags=["webhooks"],
           roles=ADMIN, status=204)
def delete_webhook(call: Call) -> Reply:
    _webhooks(call).delete(call.caller, call.org_id, call.params["webhook_id"])
    return Reply(status=204)


@operation("GET", "/orgs/{org_id}/webhooks/{webhook_id}/deliveries", summary="List a webhook's delivery attempts",
           tags=["webhooks"], roles=ADMIN, query=PageQuery, response=Page[DeliveryAttemptOut])
def list_webhook_deliveries(call: Call) -> Page[DeliveryAttemptOut]:
    return _webhooks(call).attempts_page(call.org_id, call.params["webhook_id"], limit=call.query.limit,
                                         cursor=call.query.cursor)


@operation("POST", "/internal/webhooks/dispatch", summary="Deliver due webhook events", tags=["internal"],
           platform_admin=True, body=DispatchRequest, response=DispatchOut, idempotent=False)
def dispatch_webhooks(call: Call) -> DispatchOut:
    return _webhooks(call).deliver_due(call.body.limit)
