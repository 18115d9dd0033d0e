"""The one decorator every API operation goes through.

It owns the HTTP concerns: authentication, the org role check (a non-member gets 404),
the body-size limit, JSON parsing into pydantic models (422 with field paths), the
``Idempotency-Key`` replay, error mapping to SPEC's error body, the request id, and one
structured log line per request. An operation itself parses nothing and catches nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import flask
from pydantic import BaseModel, ValidationError

# The role sets operations name in ``roles=``, re-exported (they live in shared/identity/access.py).
from functions import access_log
from shared.identity import ADMIN as ADMIN  # noqa: PLC0414
from shared.identity import ANY_MEMBER as ANY_MEMBER  # noqa: PLC0414
from shared.identity import Need, Principal, PushAuth, Role, decide
from shared.kernel.errors import (
    AppError,
    BadRequest,
    ErrorCode,
    InternalError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from shared.kernel.ids import new_id

if TYPE_CHECKING:
    # Only for the annotations: building the container is left to the first request.
    from shared.composition import Container
    from shared.kernel.settings import Settings

_log = logging.getLogger("marketplace.http")
_CONTAINER_KEY = "marketplace"
_container_lock = threading.Lock()


@dataclass(frozen=True)
class Reply:
    """An explicit status/body/headers, for operations whose success is not plain 200 JSON."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """What an operation receives: the parsed request and the services."""

    services: Container
    principal: Principal | None
    role: Role | None
    params: dict[str, str]
    body: Any
    query: Any
    request: flask.Request
    request_id: str
    raw_body: bytes = b""  # the body as sent (signed callbacks verify these bytes)

    @property
    def org_id(self) -> str:
        """The ``{org_id}`` path parameter."""
        return self.params["org_id"]

    @property
    def caller(self) -> Principal:
        """The authenticated principal (operations with ``auth=False`` have none)."""
        if self.principal is None:
            raise Unauthorized("authentication required")
        return self.principal


@dataclass
class Operation:
    """One API operation: its contract (for OpenAPI) and its wrapped HTTP handler."""

    name: str
    method: str
    path: str
    summary: str
    tags: tuple[str, ...]
    auth: bool
    roles: frozenset[Role] | None
    platform_admin: bool
    dataplane: bool
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    max_body: int | None
    idempotent: bool
    fn: Callable[[Call], Any]
    memberships: bool = False  # authentication also loads every membership of a user
    user: bool = False  # only a signed-in user, not an API key (403 user_required)
    rate_limited: bool = True  # counted against the caller's rate limit (docs/ARCHITECTURE.md)
    # What else it may answer, for its OpenAPI entry: error statuses and codes of its own (the
    # generic ones follow from the rest, see ``errors``), other success statuses with their
    # meaning, the success body's media types other than JSON, and whether it is a push target.
    own_errors: Mapping[int, tuple[ErrorCode, ...]] = field(default_factory=dict)
    also: Mapping[int, str] = field(default_factory=dict)
    media: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # request headers it reads: name -> meaning
    # A body of bytes rather than JSON (``body`` is None): the media types it accepts, each with its
    # meaning; the operation reads ``Call.raw_body``. Another Content-Type is a 415.
    accepts: Mapping[str, str] = field(default_factory=dict)
    # A push target of a Google service: which ``PushAuth`` of the container admits its caller
    # (None from it: nothing pushes in this mode, and the path is a 404).
    push: Callable[[Container], PushAuth | None] | None = None
    # Also answered without a credential (the public catalog): a credential sent is still verified.
    anonymous: bool = False
    pattern: re.Pattern[str] = field(init=False)
    handler: Callable[[flask.Request], flask.Response] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        self.pattern = re.compile(f"^{regex}$")

    @property
    def path_params(self) -> list[str]:
        """Names of the ``{param}`` segments."""
        return re.findall(r"{(\w+)}", self.path)

    @property
    def errors(self) -> dict[int, tuple[ErrorCode, ...]]:
        """Every error status this operation can answer, with its codes: the ones the decorator
        itself gives (they follow from authentication, the path, the body, the query and
        ``Idempotency-Key``), and the operation's own (``errors=``)."""
        found: dict[int, list[ErrorCode]] = {}

        def add(status: int, *codes: ErrorCode) -> None:
            found.setdefault(status, [])
            found[status].extend(c for c in codes if c not in found[status])

        if self.body is not None:
            add(400, ErrorCode.MALFORMED_JSON)
            add(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE)
        if self.accepts:
            add(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE)
        if self.idempotent:
            add(400, ErrorCode.BAD_IDEMPOTENCY_KEY)
            add(409, ErrorCode.IDEMPOTENCY_IN_PROGRESS)
            add(422, ErrorCode.IDEMPOTENCY_KEY_REUSED)
        if self.query is not None and "cursor" in self.query.model_fields:
            add(400, ErrorCode.INVALID_CURSOR)
        if self.auth:
            add(401, ErrorCode.UNAUTHORIZED, ErrorCode.INVALID_TOKEN, ErrorCode.TOKEN_EXPIRED,
                ErrorCode.INVALID_API_KEY)
            # A data-plane key outside the data-plane API (and anyone else inside it) is refused.
            add(403, ErrorCode.FORBIDDEN)
        if self.path_params:
            add(404, ErrorCode.NOT_FOUND)
        add(413, ErrorCode.PAYLOAD_TOO_LARGE)  # any request's body is read within the limit
        if self.body is not None or self.query is not None or self.path_params:
            add(422, ErrorCode.VALIDATION_FAILED)
        if self.rate_limited:
            add(429, ErrorCode.RATE_LIMITED)
        # Every operation may find the database down (docs/ARCHITECTURE.md): 503 with Retry-After.
        add(503, ErrorCode.DATABASE_UNAVAILABLE)
        for status, codes in self.own_errors.items():
            add(status, *codes)
        return {status: tuple(codes) for status, codes in sorted(found.items())}


class Registry:
    """The registered operations; registering a name or a method+path twice fails at import."""

    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}
        self._routes: set[tuple[str, str]] = set()

    def add(self, op: Operation) -> None:
        """Register ``op``."""
        route = (op.method, op.path)
        if op.name in self._ops:
            raise RuntimeError(f"operation name registered twice: {op.name}")
        if route in self._routes:
            raise RuntimeError(f"route registered twice: {op.method} {op.path}")
        self._ops[op.name] = op
        self._routes.add(route)

    def __iter__(self) -> Iterator[Operation]:
        return iter(sorted(self._ops.values(), key=lambda o: (o.path, o.method)))

    def __len__(self) -> int:
        return len(self._ops)

    def get(self, name: str) -> Operation:
        """An operation by name."""
        return self._ops[name]


REGISTRY = Registry()


def operation(method: str, path: str, *, summary: str, tags: Iterable[str] = (), auth: bool = True,
              anonymous: bool = False,
              roles: frozenset[Role] | None = None, platform_admin: bool = False, dataplane: bool = False,
              body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              response: type[BaseModel] | None = None, status: int = 200, max_body: int | None = None,
              idempotent: bool | None = None, name: str | None = None, memberships: bool = False,
              user: bool = False,
              errors: Mapping[int, ErrorCode | Iterable[ErrorCode]] | None = None,
              also: Mapping[int, str] | None = None,
              media: Mapping[str, Mapping[str, Any] | None] | None = None,
              headers: Mapping[str, str] | None = None,
              push: Callable[[Container], PushAuth | None] | None = None, rate_limited: bool = True,
              accepts: Mapping[str, str] | None = None,
              registry: Registry = REGISTRY) -> Callable[[Callable[[Call], Any]], Operation]:
    """Register an API operation and wrap it with the HTTP concerns.

    ``errors`` names the error statuses (and codes) the operation itself raises beyond the
    generic ones (``Operation.errors``); ``also`` other success statuses and what they mean;
    ``media`` success media types other than JSON, each with the schema of one item (of one
    event, for an event stream; None for opaque bytes); ``headers`` the request headers it
    reads (beyond Authorization and Idempotency-Key), with their meaning; ``accepts`` the media
    types of a body of bytes (not JSON; the operation reads ``Call.raw_body``); ``push`` marks a push target of a Google
    service (Cloud Tasks, Cloud Scheduler) by naming the container's ``PushAuth`` that admits its
    caller (the decorator checks the OIDC token before reading the body; None: a 404): called at
    its function's own URL, it is not part of the API and stays out of the OpenAPI document.
    """
    own_errors = {status: (codes,) if isinstance(codes, ErrorCode) else tuple(codes)
                  for status, codes in (errors or {}).items()}
    if user:  # what decide() answers an API key (shared/identity/access.py)
        own_errors[403] = tuple(dict.fromkeys((*own_errors.get(403, ()), ErrorCode.USER_REQUIRED)))
    if accepts and body is not None:
        raise RuntimeError(f"{method} {path}: a body is either JSON (body=) or bytes (accepts=), not both")
    if "{org_id}" in path and auth and roles is None:
        raise RuntimeError(f"{method} {path}: an org-scoped operation must name the roles it allows")

    def wrap(fn: Callable[[Call], Any]) -> Operation:
        op = Operation(name=name or fn.__name__, method=method.upper(), path=path, summary=summary,
                       tags=tuple(tags), auth=auth, roles=roles, platform_admin=platform_admin,
                       dataplane=dataplane, body=body,
                       query=query, response=response, status=status, max_body=max_body,
                       idempotent=(method.upper() == "POST" and auth) if idempotent is None else idempotent,
                       fn=fn, memberships=memberships, own_errors=own_errors, also=dict(also or {}),
                       media=dict(media or {}), headers=dict(headers or {}), accepts=dict(accepts or {}),
                       push=push, rate_limited=rate_limited, anonymous=anonymous, user=user)
        op.handler = _make_handler(op)
        registry.add(op)
        return op
    return wrap


# -- request handling --------------------------------------------------------

def get_container() -> Container:
    """The services of this Flask app: set by the gateway, or built once from the environment."""
    app = flask.current_app
    container: Container | None = app.extensions.get(_CONTAINER_KEY)
    if container is None:
        with _container_lock:
            container = app.extensions.get(_CONTAINER_KEY)
            if container is None:
                from shared.composition import build_container  # noqa: PLC0415
                from shared.kernel.jsonlog import configure_logging  # noqa: PLC0415
                from shared.kernel.settings import Settings  # noqa: PLC0415

                settings = Settings()
                configure_logging(settings.log_level)
                container = build_container(settings, migrate=False)
                app.extensions[_CONTAINER_KEY] = container
    return container


def install_container(app: flask.Flask, container: Container) -> None:
    """Give ``app`` its services explicitly (the local gateway and tests)."""
    app.extensions[_CONTAINER_KEY] = container


def _json_response(status: int, body: Any, request_id: str, headers: dict[str, str] | None = None
                   ) -> flask.Response:
    payload = b"" if body is None and status == 204 else json.dumps(body, default=str).encode()
    resp = flask.Response(payload, status=status, mimetype="application/json" if payload else None)
    # The body is one bytes object in a list: hand the list to the WSGI server as it is, instead
    # of an iterator it would have to drive chunk by chunk (granian writes a list in one call).
    resp.direct_passthrough = True
    resp.headers["X-Request-Id"] = request_id
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"path": "a.b[0]", "message": ...}`` entries."""
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        details.append({"path": path or "(body)", "message": err["msg"], "type": err["type"]})
    return details


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_body(op: Operation, request: flask.Request, limit: int) -> tuple[bytes, Any]:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    if op.accepts and (request.mimetype or "") not in op.accepts:
        raise UnsupportedMediaType("send the body as " + " or ".join(op.accepts))
    if op.body is None:
        return raw, None
    if raw.strip():
        mimetype = request.mimetype or ""
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise UnsupportedMediaType("send the body as application/json")
        try:
            data = json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}", code=ErrorCode.MALFORMED_JSON) from exc
    else:
        data = {}
    if not isinstance(data, dict):
        raise Unprocessable("the request body must be a JSON object",
                            details=[{"path": "(body)", "message": "expected an object"}])
    if _ESCAPED_UNSTORABLE.search(raw):  # JSON can carry these only as escapes
        _refuse_unstorable(data, "")
    try:
        return raw, op.body.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable("the request body is invalid", details=validation_details(exc)) from exc


_ESCAPED_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _unstorable(text: str) -> bool:
    """Text PostgreSQL cannot store: U+0000, or a lone surrogate (not UTF-8)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unstorable_at(value: Any, path: str) -> str | None:
    """The path of the first unstorable text in a parsed JSON value (keys included), if any."""
    if isinstance(value, str):
        return path or "(body)" if _unstorable(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            at = f"{path}.{key}" if path else str(key)
            found = at if _unstorable(key) else _unstorable_at(item, at)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable_at(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _refuse_unstorable(value: Any, path: str) -> None:
    """PostgreSQL's text and jsonb hold neither U+0000 nor lone surrogates: refuse them as bad
    input, naming where."""
    found = _unstorable_at(value, path)
    if found:
        shown = "".join(f"\\u{ord(c):04x}" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in found)
        raise Unprocessable("text may not contain U+0000 or unpaired surrogates",
                            details=[{"path": shown, "message": "not storable text"}])


def _parse_query(op: Operation, request: flask.Request) -> Any:
    if op.query is None:
        return None
    data: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        data[key] = values if len(values) > 1 else values[0]
    _refuse_unstorable(data, "query")
    try:
        return op.query.model_validate(data)
    except ValidationError as exc:
        raise Unprocessable("the query parameters are invalid", details=validation_details(exc)) from exc


def _credential_header(services: Container, request: flask.Request) -> str:
    if services.settings.mode == "gcp" and "X-Forwarded-Authorization" in request.headers:
        # API Gateway authenticates itself to the function with its own token and forwards
        # the caller's credential in this header.
        return request.headers["X-Forwarded-Authorization"]
    return request.headers.get("Authorization", "")


def _authenticate(op: Operation, services: Container, request: flask.Request, params: dict[str, str]) -> Principal:
    header = _credential_header(services, request)
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("send 'Authorization: Bearer <access token or API key>'")
    # The role in the addressed org is read with the user, in the same statement.
    org_id = params.get("org_id") if op.roles is not None else None
    principal: Principal = services.identity.authenticate(credential.strip(), org_id=org_id,
                                                          memberships=op.memberships)
    return principal


def client_address(request: flask.Request, settings: Settings) -> str:
    """The caller's address: the connection's peer, or behind ``client_address_hops`` trusted
    proxies the address the outermost of them saw (X-Forwarded-For, counted from the right)."""
    hops = settings.client_address_hops
    if hops:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-hops][:64] if len(forwarded) >= hops else forwarded[0][:64]
    return request.remote_addr or "unknown"


def _rate_limit(op: Operation, services: Container, request: flask.Request, principal: Principal | None) -> None:
    """Count the request against its caller's limit: the principal's, or for a call without a
    credential that verifies, its client address's (429 ``rate_limited`` past it)."""
    if not op.rate_limited:
        return
    settings = services.settings
    if principal is None:
        key, limit = f"addr:{client_address(request, settings)}", settings.rate_limit_anonymous
    elif principal.key_role == Role.DATAPLANE:
        key, limit = principal.actor, settings.rate_limit_dataplane
    else:
        key, limit = principal.actor, settings.rate_limit_principal
    services.rate_limits.hit(key, limit)


def _authorize(op: Operation, services: Container, principal: Principal, params: dict[str, str]) -> Role | None:
    # Decided by identity (shared/identity/access.py); the role was read with the user at
    # authentication, so looking it up costs no statement.
    org_id = params.get("org_id")
    role: Role | None = None
    if op.roles is not None and org_id is not None:
        role = services.orgs.role_of(principal, org_id)
    need = Need(roles=op.roles if org_id is not None else None, platform_admin=op.platform_admin,
                dataplane=op.dataplane, user=op.user, doing=f"{op.summary[:1].lower()}{op.summary[1:]}".rstrip("."))
    denied = decide(principal, need, role)
    if denied is not None:
        raise denied
    return role


_REQUEST_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _make_handler(op: Operation) -> Callable[[flask.Request], flask.Response]:
    def handler(proxy: flask.Request) -> flask.Response:
        started = time.perf_counter()
        environ = proxy.environ
        # The request object itself rather than Flask's context-local proxy to it: every attribute
        # read through the proxy costs a lookup, and a request reads dozens. werkzeug puts it in the
        # environ (its documented ``populate_request``).
        bound = environ.get("werkzeug.request")
        request: flask.Request = bound if isinstance(bound, flask.Request) else proxy
        sent_id = environ.get("HTTP_X_REQUEST_ID")
        request_id = sent_id[:64] if sent_id and _REQUEST_ID.fullmatch(sent_id[:64]) else new_id("req")
        caller: list[Principal] = []  # filled in by _handle once the credential is verified
        status = 500
        size: int | None = None
        trace = access_log.begin(environ)  # issue 19: every line of this request carries its trace
        try:
            resp = _handle(op, request, request_id, caller)
            status = resp.status_code
            size = resp.content_length
            return resp
        except AppError as exc:
            status = exc.status
            return _json_response(exc.status, exc.body(), request_id, exc.headers())
        except Exception:  # noqa: BLE001 - the 500 boundary: log it, answer SPEC's error body
            _log.exception("unhandled error in %s", op.name, extra={"fields": {"request_id": request_id}})
            fault = InternalError("internal error", details=[{"request_id": request_id}])
            return _json_response(fault.status, fault.body(), request_id)
        finally:
            principal = caller[0] if caller else None
            elapsed = time.perf_counter() - started
            # issue 19: Cloud Logging's httpRequest; a data plane's successful calls at DEBUG
            access_log.log_access(method=op.method, path=request.path, status=status, dataplane=op.dataplane,
                                  environ=environ, seconds=elapsed, response_size=size, fields={
                                      "request_id": request_id, "operation": op.name, "status": status,
                                      "duration_ms": round(elapsed * 1000, 2),
                                      "principal": principal.actor if principal else None})
            access_log.end(trace)
    handler.__name__ = op.name
    return handler


def _admit_pusher(op: Operation, services: Container, request: flask.Request) -> None:
    """A push target's caller: the pushing service's OIDC token, checked before anything is read
    (no ``PushAuth`` in this mode: nothing pushes, the path is a 404)."""
    if op.push is None:
        return
    pusher = op.push(services)
    if pusher is None:
        raise NotFound(f"no operation at {request.path}")
    pusher.check(request.headers.get("Authorization", ""))


def _path_params(op: Operation, request: flask.Request) -> dict[str, str]:
    """The path's parameters by name (a 404 when the path is not this operation's)."""
    match = op.pattern.match(request.path)
    if match is None:
        raise NotFound(f"no operation at {request.path}")
    params = match.groupdict()
    _refuse_unstorable(params, "path")
    return params


def _handle(op: Operation, request: flask.Request, request_id: str, caller: list[Principal]) -> flask.Response:
    params = _path_params(op, request)
    services = get_container()
    principal = None
    role = None
    if op.auth and not (op.anonymous and not _credential_header(services, request)):
        try:
            principal = _authenticate(op, services, request, params)
        except Unauthorized:
            _rate_limit(op, services, request, None)  # guessing credentials counts against the address
            raise
        caller.append(principal)  # for the access log
        _rate_limit(op, services, request, principal)
        role = _authorize(op, services, principal, params)
    else:
        _admit_pusher(op, services, request)
        _rate_limit(op, services, request, None)
    limit = op.max_body or services.settings.max_body_bytes
    raw, body = _read_body(op, request, limit)
    query = _parse_query(op, request)

    idem_key = request.headers.get("Idempotency-Key") if op.idempotent and principal else None
    if idem_key is not None:
        if not re.fullmatch(r"[\x21-\x7e]{1,255}", idem_key):
            raise BadRequest("Idempotency-Key must be 1-255 visible ASCII characters",
                             code=ErrorCode.BAD_IDEMPOTENCY_KEY)
        digest = hashlib.sha256(raw).hexdigest()
        stored = services.idempotency.begin(principal.actor, idem_key, op.method, request.path, digest,  # type: ignore[union-attr]
                                            org_id=params.get("org_id"))
        if stored is not None:
            return _json_response(stored.status, stored.body, request_id, {"Idempotent-Replayed": "true"})
    call = Call(services=services, principal=principal, role=role, params=params, body=body, query=query,
                request=request, request_id=request_id, raw_body=raw)
    try:
        result = op.fn(call)
        if isinstance(result, flask.Response):
            result.headers["X-Request-Id"] = request_id
            return result
        reply = result if isinstance(result, Reply) else Reply(body=result, status=op.status)
        out = _dump(reply.body)
    except AppError as exc:
        if idem_key is not None:
            if exc.status >= 500:  # ours, not the request's: a retry with the same key runs again
                services.idempotency.abandon(principal.actor, idem_key)  # type: ignore[union-attr]
            else:
                services.idempotency.complete(principal.actor, idem_key, exc.status, exc.body(),  # type: ignore[union-attr]
                                              org_id=params.get("org_id"))
        raise
    except BaseException:
        if idem_key is not None:
            services.idempotency.abandon(principal.actor, idem_key)  # type: ignore[union-attr]
        raise
    if idem_key is not None:
        _store_for_replay(op, services, principal, idem_key, status=reply.status, body=out, org_id=params.get("org_id"))
    return _json_response(reply.status, out, request_id, reply.headers)


def _store_for_replay(op: Operation, services: Container, principal: Principal | None, key: str, *, status: int,
                      body: Any, org_id: str | None) -> None:
    """Store a committed operation's response under its Idempotency-Key. Whatever happens here, the
    claim is not released (a retry would run the operation again): unstored, the key answers 409
    in progress until it expires."""
    assert principal is not None
    try:
        services.idempotency.complete(principal.actor, key, status, body, org_id=org_id)
    except Exception:  # noqa: BLE001 - the caller still gets the answer of what was done
        _log.warning("the response of %s could not be stored for replay", op.name, exc_info=True)
