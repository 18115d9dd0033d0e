"""Test fixtures: the database backend, the local gateway in-process, users and orgs.

The database backend (as temporalio's ``--workflow-environment`` chooses its server):

* **embedded** (the default): the session starts its own embedded PostgreSQL in a temporary
  data directory, exactly as ``marketplace up`` does, and stops it at the end.
* **a database URL**: ``pytest --database-url postgresql://USER[:PASSWORD]@HOST:PORT/DB`` (or the
  environment variable ``MARKETPLACE_TEST_DATABASE_URL``; the option wins) runs the suite against
  that database instead: the session migrates it and leaves it running. Point it at a database
  you can spare: tests add rows and never clean them up.

Tests that need the embedded server itself (they start ``marketplace up``, which runs its own, or
look at the server's files) are marked ``embedded_postgres`` and skipped, with the reason shown,
under a database URL. Everything else runs on either backend through the ``settings``,
``container`` and ``database_url`` fixtures.

Every test makes its own users and orgs (unique emails), so tests never need to clean the database
and can share one server.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from support.wsgi import serve_wsgi

from functions.gateway import create_gateway
from shared.composition import Container, build_container
from shared.kernel.adapters.embedded_pg import EmbeddedPostgres
from shared.kernel.settings import Settings

DATABASE_URL_ENV = "MARKETPLACE_TEST_DATABASE_URL"
EMBEDDED_POSTGRES = "embedded_postgres"

_counter = itertools.count()


# -- the database backend ------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--database-url", default=None, metavar="URL",
                     help="run against this PostgreSQL database instead of starting the embedded one "
                          f"(also: the environment variable {DATABASE_URL_ENV})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{EMBEDDED_POSTGRES}: needs the embedded PostgreSQL server itself; "
                                       "skipped when the suite runs against --database-url")


def configured_database_url(config: pytest.Config) -> str | None:
    """The database URL the suite was given, or ``None`` for the embedded default."""
    return config.getoption("--database-url") or os.environ.get(DATABASE_URL_ENV) or None


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def pytest_report_header(config: pytest.Config) -> str:
    url = configured_database_url(config)
    return f"database: {_without_password(url)}" if url else "database: embedded PostgreSQL (started by the session)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    url = configured_database_url(config)
    if url is None:
        return
    skip = pytest.mark.skip(reason=f"needs the embedded PostgreSQL; this run uses the database at "
                                   f"{_without_password(url)} (--database-url or {DATABASE_URL_ENV})")
    for item in items:
        if item.get_closest_marker(EMBEDDED_POSTGRES) is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def agent_files() -> Iterator[Path]:
    """A folder for the files a test hands an agent (a billing export): agent runs execute under
    uids of their own (runtime/sandbox.py), and pytest keeps its own temporary folders private to
    the user running it, so these live in a folder every user may read, as a user's shared files
    would."""
    folder = Path(tempfile.mkdtemp(prefix="marketplace-agent-files-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir(pytestconfig: pytest.Config) -> Iterator[Path]:
    """Local mode's data directory: keys and data-plane credentials, and the embedded server's files."""
    # Not pytest's tmp_path: its base folder is private (0700), and as root the database runs
    # as an unprivileged user who must be able to traverse into the data directory.
    path = Path(tempfile.mkdtemp(prefix="marketplace-test-"))
    path.chmod(0o755)
    yield path
    if configured_database_url(pytestconfig) is None:
        EmbeddedPostgres(path).stop(force=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(data_dir: Path, pytestconfig: pytest.Config) -> Settings:
    # database_url is always passed: None means the embedded server, whatever the environment says.
    # The suite's anonymous calls all come from the test client's one address: the limits are
    # raised (still counted) so that only tests/e2e/test_rate_limits.py, with its own, meets them.
    return Settings(mode="local", data_dir=data_dir, public_url="https://testserver", db_pool_size=24,
                    database_url=configured_database_url(pytestconfig), rate_limit_principal=10_000_000,
                    rate_limit_dataplane=10_000_000, rate_limit_anonymous=10_000_000)


@pytest.fixture(scope="session")
def container(settings: Settings) -> Iterator[Container]:
    built = build_container(settings)
    yield built
    built.close()


@pytest.fixture(scope="session")
def database_url(settings: Settings, container: Container) -> str:
    """The URL of the database the session's container uses, migrated (either backend)."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return EmbeddedPostgres(settings.data_dir).ensure_running().url(settings.db_name)


@pytest.fixture(scope="session")
def app(container: Container) -> Any:
    return create_gateway(container)


@dataclass
class Response:
    status: int
    body: Any
    headers: Any
    data: bytes = b""  # the body as sent (a download's bytes)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body!r}>"


class Client:
    """The gateway's test client with an optional bearer credential."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self._client = app.test_client()
        self.token = token

    def request(self, method: str, path: str, *, json: Any = None, data: Any = None,
                headers: dict[str, str] | None = None, token: str | None = None, **kw: Any) -> Response:
        hdrs = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer:
            hdrs.setdefault("Authorization", f"Bearer {bearer}")
        resp = self._client.open(path, method=method, json=json, data=data, headers=hdrs, **kw)
        body = resp.get_json(silent=True) if resp.data else None
        return Response(resp.status_code, body, resp.headers, resp.data)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}@example.com"


@pytest.fixture
def anon(app: Any) -> Client:
    return Client(app)


@pytest.fixture
def make_user(app: Any, container: Container):
    """``make_user(platform_admin=False) -> Client`` authenticated as a brand-new user."""

    def make(tag: str = "user", *, platform_admin: bool = False) -> Client:
        email = unique_email(tag)
        pair = container.identity.dev_grant(email, platform_admin=True if platform_admin else None)
        client = Client(app, pair.access_token)
        client.email = email  # type: ignore[attr-defined]
        client.refresh_token = pair.refresh_token  # type: ignore[attr-defined]
        return client

    return make


@pytest.fixture
def make_org(make_user):
    """``make_org() -> (admin_client, org_id)``: a fresh org and its admin."""

    def make(name: str = "Acme") -> tuple[Client, str]:
        admin = make_user("admin")
        resp = admin.post("/orgs", json={"name": name})
        assert resp.status == 201, resp
        return admin, resp.body["id"]

    return make


@pytest.fixture
def member(app: Any, make_user):
    """``member(admin, org_id, role) -> Client``: a new user added to the org with ``role``."""

    def add(admin: Client, org_id: str, role: str) -> Client:
        user = make_user(role)
        resp = admin.post(f"/orgs/{org_id}/members", json={"email": user.email, "role": role})  # type: ignore[attr-defined]
        assert resp.status == 201, resp
        user.user_id = resp.body["user_id"]  # type: ignore[attr-defined]
        return user

    return add


@pytest.fixture(scope="module")
def live_url(app: Any) -> Iterator[str]:
    """The gateway on a free loopback port, over real HTTP (``support.wsgi.serve_wsgi``)."""
    with serve_wsgi(app) as url:
        yield url
