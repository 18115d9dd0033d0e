"""Rate limits through the gateway: per principal, per client address for anonymous calls, shared
by every server process through PostgreSQL (two containers on one database stand for two
processes), answered 429 with Retry-After and SPEC's error body."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from functions.gateway import create_gateway
from shared.composition import Container, build_container
from shared.identity import RateLimiter
from shared.kernel.errors import TooManyRequests

WINDOW = 3600


def frozen_clock() -> Callable[[], float]:
    """Now, frozen: a test never straddles two windows (and others' clean-up never reaches its window)."""
    now = time.time()
    return lambda: now


def gateway(container: Container, clock: Callable[[], float] | None = None, *, batch: int = 32,
            **limits: Any) -> Any:
    """A gateway app on the session's database with its own limits and its own limiter (as one
    more server process would have)."""
    settings = container.settings.model_copy(update={"rate_limit_principal": 0, "rate_limit_dataplane": 0,
                                                    "rate_limit_anonymous": 0, **limits})
    limiter = RateLimiter(container.db, window_seconds=WINDOW, batch=batch, clock=clock or frozen_clock())
    return create_gateway(dataclasses.replace(container, settings=settings, rate_limits=limiter))


def address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def call(app: Any, path: str, *, token: str | None = None, remote: str = "127.0.0.1",
         headers: dict[str, str] | None = None) -> Any:
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    return app.test_client().get(path, headers=hdrs, environ_base={"REMOTE_ADDR": remote})


def assert_limited(resp: Any) -> None:
    assert resp.status_code == 429, resp.get_json()
    assert 1 <= int(resp.headers["Retry-After"]) <= WINDOW
    body = resp.get_json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["message"] and body["error"]["details"] == []


def test_a_caller_over_its_limit_gets_429_and_another_is_unaffected(container, make_user):
    app = gateway(container, rate_limit_principal=5)
    alice, bob = make_user("alice"), make_user("bob")
    assert [call(app, "/me", token=alice.token).status_code for _ in range(5)] == [200] * 5
    assert_limited(call(app, "/me", token=alice.token))
    assert_limited(call(app, "/agents", token=alice.token))  # every operation draws on the one limit
    assert call(app, "/me", token=bob.token).status_code == 200


def test_an_api_key_is_limited_as_its_own_caller(container, make_org):
    admin, org_id = make_org()
    key = admin.post(f"/orgs/{org_id}/api-keys", json={"name": "ci", "role": "viewer"}).body["key"]
    app = gateway(container, rate_limit_principal=2)
    assert [call(app, f"/orgs/{org_id}", token=key).status_code for _ in range(2)] == [200, 200]
    assert_limited(call(app, f"/orgs/{org_id}", token=key))
    assert call(app, f"/orgs/{org_id}", token=admin.token).status_code == 200


def test_anonymous_calls_are_limited_per_client_address(container):
    app = gateway(container, rate_limit_anonymous=3)
    here, there = address(), address()
    assert [call(app, "/manifests/schema", remote=here).status_code for _ in range(3)] == [200] * 3
    assert_limited(call(app, "/manifests/schema", remote=here))
    # A credential that does not verify is no way around it: the address is counted.
    assert_limited(call(app, "/me", token="mk.key_nope.guess", remote=here))
    assert call(app, "/manifests/schema", remote=there).status_code == 200
    assert call(app, "/me", token="mk.key_nope.guess", remote=there).status_code == 401


def test_failed_authentication_counts_against_the_address(container):
    app = gateway(container, rate_limit_anonymous=2)
    here = address()
    assert [call(app, "/me", token="mk.key_x.guess", remote=here).status_code for _ in range(2)] == [401, 401]
    assert_limited(call(app, "/me", token="mk.key_x.guess", remote=here))


def test_behind_trusted_proxies_the_forwarded_address_is_the_caller(container):
    app = gateway(container, rate_limit_anonymous=1, client_address_hops=1)
    first, second = address(), address()
    # A client may put anything on the left of X-Forwarded-For; the trusted proxy appends what it saw.
    assert call(app, "/manifests/schema", headers={"X-Forwarded-For": f"1.2.3.4, {first}"}).status_code == 200
    assert_limited(call(app, "/manifests/schema", headers={"X-Forwarded-For": f"5.6.7.8, {first}"}))
    assert call(app, "/manifests/schema", headers={"X-Forwarded-For": f"1.2.3.4, {second}"}).status_code == 200


@pytest.fixture
def second_container(settings: Any) -> Iterator[Container]:
    """Another container built from the same settings, as another server process builds its own:
    its own connection pool and limiter, the same database."""
    built = build_container(settings, migrate=False)
    yield built
    built.close()


def test_limits_are_shared_by_every_process_on_the_database(container, second_container, make_user):
    clock = frozen_clock()
    one = gateway(container, clock, rate_limit_principal=4)
    two = gateway(second_container, clock, rate_limit_principal=4)
    carol = make_user("carol")
    assert call(one, "/me", token=carol.token).status_code == 200
    assert call(two, "/me", token=carol.token).status_code == 200
    assert call(one, "/me", token=carol.token).status_code == 200
    assert call(two, "/me", token=carol.token).status_code == 200
    assert_limited(call(one, "/me", token=carol.token))
    assert_limited(call(two, "/me", token=carol.token))


def test_the_overshoot_across_processes_stays_within_the_documented_bound(container):
    """Far from the limit each process counts in memory and writes its hits in batches; near it
    the database decides each hit: a window admits at most limit + (processes - 1) * (batch - 1)."""
    clock = frozen_clock()
    limit, batch = 100, 10
    processes = [RateLimiter(container.db, window_seconds=WINDOW, batch=batch, clock=clock) for _ in range(3)]
    key = f"test:{uuid.uuid4().hex}"
    admitted = 0
    for n in range(400):
        try:
            processes[n % 3].hit(key, limit)
            admitted += 1
        except TooManyRequests:
            pass
    assert limit <= admitted <= limit + (len(processes) - 1) * (batch - 1)
    # Once a process has seen the total over the limit it refuses without asking the database.
    with pytest.raises(TooManyRequests):
        processes[0].hit(key, limit)


def test_a_new_window_starts_afresh_and_retry_after_counts_down_to_it(container):
    now = [time.time() // 60 * 60 + 30]
    limiter = RateLimiter(container.db, window_seconds=60, batch=4, clock=lambda: now[0])
    key = f"test:{uuid.uuid4().hex}"
    for _ in range(3):
        limiter.hit(key, 3)
    with pytest.raises(TooManyRequests) as refused:
        limiter.hit(key, 3)
    assert refused.value.headers() == {"Retry-After": "30"}
    now[0] += 30
    limiter.hit(key, 3)  # the next window


class _DownDatabase:
    """A database that cannot be reached (as when PostgreSQL is down)."""

    def __init__(self) -> None:
        self.attempts = 0

    def read(self) -> Any:
        self.attempts += 1
        raise OSError("connection refused")


def test_an_unreachable_database_lets_requests_through_and_is_not_asked_again_at_once():
    down = _DownDatabase()
    limiter = RateLimiter(down, window_seconds=WINDOW, batch=1, clock=frozen_clock())  # type: ignore[arg-type]
    for _ in range(5):
        limiter.hit("user:usr_x", 2)  # over the limit, but nobody can count: let through
    assert down.attempts == 1
