"""Run localstripe (the Stripe emulator) for the tests: ``python -m support.localstripe_server --port N``.

Two gaps of localstripe are filled with its own building blocks, so that the real ``stripe``
library's calls work against it as they do against Stripe:

* it has no ``POST /v1/invoices/{id}/finalize``: added with its route helper and its Invoice's own
  finalize step;
* it creates invoices only for subscriptions: a one-off invoice (no subscription,
  ``pending_invoice_items_behavior=include``) is made with its own Invoice constructor, which takes
  the customer's pending invoice items, as Stripe does.
"""

from __future__ import annotations

from typing import Any

from localstripe import server
from localstripe.resources import Invoice

_create_for_subscription = Invoice._api_create


def _create(customer: Any = None, subscription: Any = None, metadata: Any = None, description: Any = None,
            pending_invoice_items_behavior: Any = None, **rest: Any) -> Any:
    if subscription is None and pending_invoice_items_behavior == "include":
        return Invoice(customer=customer, metadata=metadata, description=description)
    return _create_for_subscription(customer=customer, subscription=subscription, metadata=metadata,
                                    description=description,
                                    pending_invoice_items_behavior=pending_invoice_items_behavior, **rest)


def _finalize(id: str, **_: Any) -> Any:
    invoice = Invoice._api_retrieve(id)
    if invoice.status == "draft":
        invoice._finalize()
    return invoice


Invoice._api_create = staticmethod(_create)
server.app.router.add_route("POST", "/v1/invoices/{id}/finalize",
                            server.api_extra(_finalize, "/v1/invoices/{id}/finalize"))

if __name__ == "__main__":
    server.start()
