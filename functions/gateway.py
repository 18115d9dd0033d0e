"""The local gateway: one WSGI app serving every operation at its path, through the same handlers."""

from __future__ import annotations

from typing import Any

import flask
from werkzeug.exceptions import MethodNotAllowed as WzMethodNotAllowed
from werkzeug.exceptions import NotFound as WzNotFound
from werkzeug.routing import Map, Rule

from functions.main import load_operations
from functions.operation import REGISTRY, install_container
from shared.errors import AppError, MethodNotAllowed, NotFound
from shared.ids import new_id

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _error(exc: AppError) -> flask.Response:
    resp = flask.jsonify(exc.body())
    resp.status_code = exc.status
    resp.headers["X-Request-Id"] = new_id("req")
    return resp


def create_gateway(container: Any) -> flask.Flask:
    """A Flask app routing each request to its registered operation."""
    load_operations()
    rules = Map([Rule(op.path.replace("{", "<").replace("}", ">"), endpoint=op.name, methods=[op.method])
                 for op in REGISTRY], strict_slashes=False)
    app = flask.Flask("marketplace-gateway")
    install_container(app, container)

    @app.route("/", defaults={"path": ""}, methods=_ALL_METHODS)
    @app.route("/<path:path>", methods=_ALL_METHODS)
    def dispatch(path: str) -> flask.Response:  # noqa: ARG001 - werkzeug passes it; the matcher reads it
        adapter = rules.bind("gateway")
        try:
            name, _ = adapter.match(flask.request.path, method=flask.request.method)
        except WzMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            return _error(MethodNotAllowed(f"{flask.request.method} is not allowed here; use {allowed}"))
        except WzNotFound:
            return _error(NotFound(f"no operation at {flask.request.path}"))
        return REGISTRY.get(str(name)).handler(flask.request)

    return app
