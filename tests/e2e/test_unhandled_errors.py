"""A fault inside an operation is a 500 with SPEC's error body naming the request, and nothing
of the fault (its message, a secret in it) reaches the caller."""

from __future__ import annotations

import flask

from functions.operation import Call, Registry, install_container, operation
from shared.composition import Container

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


def _app_with_a_faulty_operation(container: Container) -> flask.Flask:
    registry = Registry()

    @operation("GET", "/faulty", summary="Fail", auth=False, rate_limited=False, registry=registry)
    def faulty(call: Call) -> None:
        raise RuntimeError(f"could not reach the bank with {SECRET}")

    app = flask.Flask("faulty")
    install_container(app, container)
    for op in registry:
        app.add_url_rule(op.path, endpoint=op.name, view_func=lambda op=op: op.handler(flask.request),
                         methods=[op.method])
    return app


def test_an_unhandled_fault_is_a_500_that_names_the_request_and_nothing_else(container: Container) -> None:
    client = _app_with_a_faulty_operation(container).test_client()
    resp = client.get("/faulty", headers={"X-Request-Id": "req-fault-1"})
    assert resp.status_code == 500
    assert resp.headers["X-Request-Id"] == "req-fault-1"
    assert resp.get_json() == {"error": {"code": "internal", "message": "internal error",
                                         "details": [{"request_id": "req-fault-1"}]}}
    assert SECRET not in resp.get_data(as_text=True) and "bank" not in resp.get_data(as_text=True)


def test_without_a_request_id_the_platform_makes_one_and_returns_it(container: Container) -> None:
    resp = _app_with_a_faulty_operation(container).test_client().get("/faulty")
    assert resp.status_code == 500
    request_id = resp.headers["X-Request-Id"]
    assert request_id.startswith("req")
    assert resp.get_json()["error"]["details"] == [{"request_id": request_id}]
