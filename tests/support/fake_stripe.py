"""A stateful stand-in for the part of Stripe's API the platform uses, for the real ``stripe`` library.

``FakeStripe`` serves, on the suite's ``RecordingServer``, what ``StripePayments`` calls (customers,
invoice items, one-off invoices and their finalization; Connect accounts, onboarding links and
transfers) as Stripe answers them: secret-key authentication, idempotency keys (a replay answers the first
response, the same key with other parameters is a 400 ``idempotency_error``), ``resource_missing``
404s, one-off invoices that take the customer's pending invoice items
(``pending_invoice_items_behavior=include``), and a draft -> open finalization that only a draft
may take. The platform points its Stripe client at ``url`` (``MARKETPLACE_STRIPE_API_BASE``), so
the library's own HTTP transport, retries and encoding are what is exercised.

localstripe was used before; it has neither one-off invoices nor the finalize route, and adding
them took its private internals.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

from support.http import Recorded, RecordingServer, Reply

Object = dict[str, Any]


class StripeError(Exception):
    """An error answer of the API: its HTTP status and the ``error`` object's fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error: Object = {"type": type, "message": message}
        if code:
            self.error["code"] = code
        if param:
            self.error["param"] = param


def form(body: bytes) -> Object:
    """Stripe's form encoding (``metadata[org_id]=x``, ``expand[0]=y``) decoded into nested objects."""
    decoded: Object = {}
    for key, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
        name, *path = re.findall(r"[^\[\]]+", key)
        node = decoded
        for part in [name, *path][:-1]:
            node = node.setdefault(part, {})
        node[([name, *path])[-1]] = value
    return {key: _lists(value) for key, value in decoded.items()}


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        items = {key: _lists(item) for key, item in value.items()}
        if items and all(key.isdigit() for key in items):
            return [items[key] for key in sorted(items, key=int)]
        return items
    return value


class FakeStripe:
    """Stripe's customers, invoice items and invoices, served at ``url`` until ``close()``."""

    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key
        self._objects: dict[str, Object] = {}  # id -> object, in creation order
        self._idempotent: dict[str, tuple[str, Object, Reply]] = {}  # key -> (route, params, first answer)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._failing: list[list[Any]] = []  # [route prefix, answers left]
        self.server = RecordingServer(self._answer)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> FakeStripe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fail(self, route: str, times: int) -> None:
        """An outage: the next ``times`` requests whose ``"METHOD /path"`` starts with ``route`` are
        answered 503 without being executed (nothing is stored for their idempotency keys)."""
        with self._lock:
            self._failing.append([route, times])

    def objects(self, kind: str) -> list[Object]:
        """Every stored object of ``kind`` (``customer``, ``invoiceitem``, ``invoice``), oldest first."""
        with self._lock:
            return [_snapshot(o) for o in self._objects.values() if o["object"] == kind]

    # -- the HTTP surface ------------------------------------------------------------------------

    def _answer(self, request: Recorded) -> Reply:
        with self._lock:
            try:
                self._authenticate(request)
                self._outage(f"{request.method} {request.path}")
                params = form(request.body) if request.method == "POST" else dict(request.query)
                key = request.headers.get("idempotency-key")
                route = f"{request.method} {request.path}"
                if request.method == "POST" and key:
                    return self._idempotently(key, route, params)
                return Reply(200, _snapshot(self._route(request.method, request.path, params)))
            except StripeError as exc:
                return Reply(exc.status, {"error": exc.error})

    def _authenticate(self, request: Recorded) -> None:
        if request.headers.get("authorization") != f"Bearer {self._secret_key}":
            raise StripeError(401, "Invalid API Key provided.")

    def _outage(self, route: str) -> None:
        for failing in self._failing:
            if route.startswith(failing[0]) and failing[1] > 0:
                failing[1] -= 1
                raise StripeError(503, "Stripe is temporarily unavailable.", type="api_error")

    def _idempotently(self, key: str, route: str, params: Object) -> Reply:
        if key in self._idempotent:
            first_route, first_params, reply = self._idempotent[key]
            if (first_route, first_params) != (route, params):
                raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters "
                                       "they were first used with.", type="idempotency_error")
            return Reply(reply.status, reply.body, {"Idempotent-Replayed": "true"})
        method, path = route.split(" ", 1)
        try:
            reply = Reply(200, _snapshot(self._route(method, path, params)))
        except StripeError as exc:
            reply = Reply(exc.status, {"error": exc.error})
        if reply.status < 500:
            self._idempotent[key] = (route, params, reply)
        return reply

    def _route(self, method: str, path: str, params: Object) -> Object:
        parts = path.strip("/").split("/")
        if parts[0] != "v1" or len(parts) < 2:
            raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")
        match method, parts[1:]:
            case "POST", ["customers"]:
                return self._create_customer(params)
            case "GET", ["customers"]:
                return self._list("customer", "/v1/customers", params)
            case "GET", ["customers", id]:
                return self._get(id, "customer")
            case "POST", ["invoiceitems"]:
                return self._create_invoice_item(params)
            case "POST", ["invoices"]:
                return self._create_invoice(params)
            case "GET", ["invoices"]:
                return self._list("invoice", "/v1/invoices", params)
            case "GET", ["invoices", id]:
                return self._get(id, "invoice")
            case "POST", ["invoices", id, "finalize"]:
                return self._finalize(id)
            case "POST", ["accounts"]:
                return self._create_account(params)
            case "POST", ["account_links"]:
                return self._create_account_link(params)
            case "POST", ["transfers"]:
                return self._create_transfer(params)
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    # -- the resources ---------------------------------------------------------------------------

    def _new(self, prefix: str, kind: str, fields: Object) -> Object:
        obj = {"id": f"{prefix}_{next(self._ids):08d}", "object": kind, "created": int(time.time()),
               "livemode": False, **fields}
        self._objects[obj["id"]] = obj
        return obj

    def _get(self, id: str, kind: str) -> Object:
        obj = self._objects.get(id)
        if obj is None or obj["object"] != kind:
            raise StripeError(404, f"No such {kind}: '{id}'", code="resource_missing", param="id")
        return obj

    def _customer(self, params: Object) -> str:
        customer = params.get("customer")
        if not customer:
            raise StripeError(400, "Missing required param: customer.", code="parameter_missing", param="customer")
        obj = self._objects.get(customer)
        if obj is None or obj["object"] != "customer":
            raise StripeError(400, f"No such customer: '{customer}'", code="resource_missing", param="customer")
        return str(customer)

    def _create_customer(self, params: Object) -> Object:
        return self._new("cus", "customer", {"description": params.get("description"), "email": params.get("email"),
                                             "metadata": _metadata(params)})

    def _create_invoice_item(self, params: Object) -> Object:
        customer = self._customer(params)
        try:
            amount = int(params["amount"])
        except (KeyError, ValueError):
            raise StripeError(400, "Invalid integer: amount", code="parameter_invalid_integer",
                              param="amount") from None
        currency = params.get("currency")
        if not currency:
            raise StripeError(400, "Missing required param: currency.", code="parameter_missing", param="currency")
        return self._new("ii", "invoiceitem", {"customer": customer, "amount": amount, "currency": currency,
                                               "description": params.get("description"), "invoice": None,
                                               "metadata": _metadata(params)})

    def _create_invoice(self, params: Object) -> Object:
        customer = self._customer(params)
        behavior = params.get("pending_invoice_items_behavior", "exclude")
        if behavior not in ("include", "exclude"):
            raise StripeError(400, "Invalid pending_invoice_items_behavior", code="parameter_invalid_string",
                              param="pending_invoice_items_behavior")
        invoice = self._new("in", "invoice", {"customer": customer, "status": "draft", "currency": "usd",
                                              "metadata": _metadata(params), "subscription": None,
                                              "status_transitions": {"finalized_at": None, "paid_at": None}})
        lines = []
        if behavior == "include":
            for item in [o for o in self._objects.values() if o["object"] == "invoiceitem"]:
                if item["customer"] == customer and item["invoice"] is None:
                    item["invoice"] = invoice["id"]
                    invoice["currency"] = item["currency"]
                    lines.append({"id": f"il_{item['id']}", "object": "line_item", "amount": item["amount"],
                                  "currency": item["currency"], "description": item["description"],
                                  "metadata": item["metadata"], "invoice_item": item["id"]})
        total = sum(line["amount"] for line in lines)
        invoice.update(subtotal=total, total=total, amount_due=total, amount_paid=0, lines={
            "object": "list", "data": lines, "has_more": False, "url": f"/v1/invoices/{invoice['id']}/lines"})
        return invoice

    def _finalize(self, id: str) -> Object:
        invoice = self._get(id, "invoice")
        if invoice["status"] != "draft":
            raise StripeError(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                              code="invoice_not_editable")
        invoice["status"] = "open"
        invoice["status_transitions"]["finalized_at"] = int(time.time())
        return invoice

    def _create_account(self, params: Object) -> Object:
        if params.get("type") not in ("express", "standard", "custom"):
            raise StripeError(400, "Invalid type: must be one of express, standard, or custom", param="type")
        return self._new("acct", "account", {"type": params["type"], "country": params.get("country", "US"),
                                              "email": params.get("email"), "metadata": _metadata(params),
                                              "capabilities": dict.fromkeys(params.get("capabilities") or {}, "inactive")})

    def _create_account_link(self, params: Object) -> Object:
        account = self._get(str(params.get("account")), "account")
        for name in ("refresh_url", "return_url", "type"):
            if not params.get(name):
                raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return {"object": "account_link", "created": int(time.time()), "expires_at": int(time.time()) + 300,
                "url": f"https://connect.stripe.com/setup/e/{account['id']}/{next(self._ids):08d}"}

    def _create_transfer(self, params: Object) -> Object:
        destination = self._objects.get(str(params.get("destination")))
        if destination is None or destination["object"] != "account":
            raise StripeError(400, f"No such destination: '{params.get('destination')}'", code="resource_missing",
                              param="destination")
        try:
            amount = int(params["amount"])
        except (KeyError, ValueError):
            raise StripeError(400, "Invalid integer: amount", code="parameter_invalid_integer",
                              param="amount") from None
        if amount < 1:
            raise StripeError(400, "This value must be greater than or equal to 1.", param="amount")
        return self._new("tr", "transfer", {"amount": amount, "currency": params.get("currency"),
                                            "destination": destination["id"], "description": params.get("description"),
                                            "metadata": _metadata(params)})

    def _list(self, kind: str, url: str, params: Object) -> Object:
        """Newest first, ``limit`` (default 10, at most 100) after ``starting_after``, as Stripe pages."""
        try:
            limit = int(params.get("limit", 10))
        except ValueError:
            raise StripeError(400, "Invalid integer: limit", param="limit") from None
        if not 1 <= limit <= 100:
            raise StripeError(400, "Invalid limit: must be between 1 and 100", param="limit")
        found = [o for o in reversed(self._objects.values()) if o["object"] == kind
                 and all(o.get(field) == params[field] for field in ("customer",) if field in params)]
        if "starting_after" in params:
            ids = [o["id"] for o in found]
            if params["starting_after"] not in ids:
                raise StripeError(400, f"No such {kind}: '{params['starting_after']}'", param="starting_after")
            found = found[ids.index(params["starting_after"]) + 1:]
        return {"object": "list", "url": url, "data": found[:limit], "has_more": len(found) > limit}


def _snapshot(obj: Object) -> Object:
    """A deep copy: an answer shows the object as it was when answered, whatever happens to it later."""
    copied: Object = json.loads(json.dumps(obj))
    return copied


def _metadata(params: Object) -> dict[str, str]:
    metadata = params.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise StripeError(400, "Invalid object: metadata", param="metadata")
    return {str(k): str(v) for k, v in metadata.items()}
