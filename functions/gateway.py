"""The local gateway: one WSGI app serving every operation at its path, through the same handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flask
from werkzeug.exceptions import MethodNotAllowed as WzMethodNotAllowed
from werkzeug.exceptions import NotFound as WzNotFound

from functions.main import load_operations
from functions.operation import REGISTRY, install_container
from shared.kernel.errors import AppError, MethodNotAllowed, NotFound
from shared.kernel.ids import new_id

if TYPE_CHECKING:
    from shared.composition import Container


def _error(exc: AppError) -> flask.Response:
    resp = flask.jsonify(exc.body())
    resp.status_code = exc.status
    resp.headers["X-Request-Id"] = new_id("req")
    return resp


def create_gateway(container: Container) -> flask.Flask:
    """A Flask app routing each request to its registered operation (one rule per operation)."""
    load_operations()
    app = flask.Flask("marketplace-gateway", static_folder=None)
    app.url_map.strict_slashes = False
    install_container(app, container)
    for op in REGISTRY:
        app.add_url_rule(op.path.replace("{", "<").replace("}", ">"), endpoint=op.name,
                         view_func=_view(op.handler), methods=[op.method])

    @app.errorhandler(WzNotFound)
    def not_found(_: WzNotFound) -> flask.Response:
        return _error(NotFound(f"no operation at {flask.request.path}"))

    @app.errorhandler(WzMethodNotAllowed)
    def method_not_allowed(exc: WzMethodNotAllowed) -> flask.Response:
        allowed = ", ".join(sorted(m for m in exc.valid_methods or [] if m not in ("HEAD", "OPTIONS")))
        return _error(MethodNotAllowed(f"{flask.request.method} is not allowed here; use {allowed}"))

    return app


def _view(handler: Any) -> Any:
    def view(**_: str) -> flask.Response:  # the handler reads the path parameters itself
        response: flask.Response = handler(flask.request)
        return response
    return view
