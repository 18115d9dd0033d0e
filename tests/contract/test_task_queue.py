"""The TaskQueue contract, run against every adapter that keeps state.

* ``postgres``: ``PgTaskQueue`` on the session's embedded PostgreSQL.
* ``cloud_tasks``: ``CloudTasksQueue`` (the gcp composition: PostgreSQL state, Cloud Tasks
  delivery) with the real ``google-cloud-tasks`` client against ``gcloud-tasks-emulator``,
  which the fixtures start on a free loopback port. It delivers the pushes to a small HTTP
  server the tests run. A missing emulator fails these tests; it never skips them.

Every test uses its own deployment id, so tests sharing the ``tasks`` table never see each
other's tasks. Then the gcp adapter's own behaviour (names, bodies, delivery, retries pushed,
relay, deduplication), and property tests of the backoff schedule.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.http import RecordingServer
from support.wait import wait_until

from shared.composition import Container, connection_factory
from shared.kernel.net import free_port
from shared.runs.adapters.cloud_tasks_queue import CloudTasksQueue, cloud_task_name
from shared.runs.adapters.pg_task_queue import PgTaskQueue, _Sql
from shared.runs.task_queue import LeaseLost, RetryPolicy, TaskQueue, TaskState

# Short enough to keep the suite quick, long enough that "not yet due" is observable.
TEST_RETRY = RetryPolicy(base_seconds=0.3, factor=2.0, cap_seconds=1.0, jitter=0.5)
# Long on purpose: a waiting claim that returns quickly was woken by a notification, not a poll.
POLL_INTERVAL = 5.0
PROJECT_PARENT = "projects/marketplace-test/locations/local"
SERVICE_ACCOUNT = "dispatch@marketplace-test.iam.gserviceaccount.com"


def _deployment() -> str:
    return f"dep_{uuid.uuid4().hex[:12]}"


# -- the push target and the emulator ------------------------------------------------------------
@dataclass
class PushTarget:
    """Where the emulator delivers the pushes: a recording server's ``/jobs/agent_run``."""

    server: RecordingServer

    @property
    def url(self) -> str:
        return f"{self.server.url}/jobs/agent_run"


@pytest.fixture(scope="module")
def push_target() -> Iterator[PushTarget]:
    with RecordingServer() as server:
        yield PushTarget(server)


def _emulator_command() -> list[str]:
    configured = os.environ.get("MARKETPLACE_TASKS_EMULATOR")
    if configured:
        return configured.split()
    if importlib.util.find_spec("gcloud_tasks_emulator") is not None:
        return [sys.executable, "-m", "gcloud_tasks_emulator"]
    found = shutil.which("gcloud-tasks-emulator")
    if found:
        return [found]
    pytest.fail("gcloud-tasks-emulator is not installed: the Cloud Tasks contract tests need it "
                "(pip install --no-deps gcloud-tasks-emulator==0.6.2, see docs/QUEUE.md), "
                "or set MARKETPLACE_TASKS_EMULATOR to its command", pytrace=False)


@pytest.fixture(scope="module")
def tasks_emulator() -> Iterator[str]:
    """``host:port`` of a running Cloud Tasks emulator."""
    import grpc

    port = free_port()
    proc = subprocess.Popen([*_emulator_command(), "start", "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
    except grpc.FutureTimeoutError:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"the Cloud Tasks emulator did not start: {err.decode(errors='replace')[-2000:]}")
    finally:
        channel.close()
    yield address
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tasks_client(address: str) -> Any:
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(address)))


@pytest.fixture(scope="module")
def tasks_client(tasks_emulator: str) -> Iterator[Any]:
    client = _tasks_client(tasks_emulator)
    yield client
    client.transport.close()


def _create_queue(client: Any) -> str:
    from google.cloud import tasks_v2

    name = f"{PROJECT_PARENT}/queues/q-{uuid.uuid4().hex[:10]}"
    return str(client.create_queue(parent=PROJECT_PARENT, queue=tasks_v2.Queue(name=name)).name)


# -- the adapters under test -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_queue(container: Container) -> Iterator[PgTaskQueue]:
    queue = PgTaskQueue(container.db, listen_connect=connection_factory(container.settings),
                        retry=TEST_RETRY, poll_interval=POLL_INTERVAL)
    yield queue
    queue.close()


def _cloud_queue(container: Container, request: pytest.FixtureRequest) -> Iterator[CloudTasksQueue]:
    address = request.getfixturevalue("tasks_emulator")
    target: PushTarget = request.getfixturevalue("push_target")
    client = request.getfixturevalue("tasks_client")
    state = PgTaskQueue(container.db, listen_connect=connection_factory(container.settings),
                        retry=TEST_RETRY, poll_interval=POLL_INTERVAL)
    queue = CloudTasksQueue(state, queue_path=_create_queue(client), target_url=target.url,
                            service_account_email=SERVICE_ACCOUNT, emulator_host=address)
    yield queue
    queue.close()


@pytest.fixture(scope="module", params=["postgres", pytest.param("cloud_tasks", marks=pytest.mark.emulator)])
def queue(request: pytest.FixtureRequest, container: Container) -> Iterator[TaskQueue]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_queue")
    else:
        yield from _cloud_queue(container, request)


def _enqueue(queue: TaskQueue, deployment: str, **overrides: Any) -> str:
    args: dict[str, Any] = {"kind": "agent_run", "payload": {"inputs": {"n": 1}},
                            "run_id": f"run_{uuid.uuid4().hex[:10]}", "org_id": "org_test",
                            "deployment_id": deployment}
    args.update(overrides)
    return queue.enqueue(None, **args)


def _claim(queue: TaskQueue, deployment: str | None, *, wait: float = 0.0, lease: int = 30,
           worker: str = "worker-1") -> Any:
    return queue.claim_next(deployment_id=deployment, worker_id=worker, lease_seconds=lease, wait_seconds=wait)


# -- the contract ------------------------------------------------------------------------------------
def test_enqueue_claim_complete(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = queue.enqueue(None, kind="agent_run", payload={"inputs": {"q": "hello"}}, run_id="run_abc",
                            org_id="org_1", deployment_id=dep)
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.QUEUED and info.attempt == 0

    task = _claim(queue, dep)
    assert task is not None
    assert (task.id, task.kind, task.payload, task.run_id, task.org_id, task.deployment_id, task.attempt) == (
        task_id, "agent_run", {"inputs": {"q": "hello"}}, "run_abc", "org_1", dep, 1)
    assert task.lease_expires_at > datetime.now(UTC) + timedelta(seconds=20)
    leased = queue.get(task_id)
    assert leased is not None and leased.state is TaskState.LEASED and leased.lease_owner == "worker-1"
    assert _claim(queue, dep) is None  # leased: nobody else gets it

    assert queue.complete(task_id, task.lease_token) is True
    done = queue.get(task_id)
    assert done is not None and done.state is TaskState.DONE and done.finished_at is not None
    assert queue.complete(task_id, task.lease_token) is False
    assert _claim(queue, dep) is None
    assert queue.get("task_does_not_exist") is None


def test_enqueue_joins_the_callers_transaction(queue: TaskQueue, container: Container) -> None:
    dep = _deployment()
    enqueued: list[str] = []

    def create_run_then_fail() -> None:
        with container.db.transaction() as tx:
            enqueued.append(queue.enqueue(tx, kind="agent_run", payload={}, run_id=None, org_id="org_1",
                                          deployment_id=dep))
            raise RuntimeError("the run record failed")

    with pytest.raises(RuntimeError):
        create_run_then_fail()
    assert queue.get(enqueued[0]) is None

    with container.db.transaction() as tx:
        task_id = queue.enqueue(tx, kind="agent_run", payload={}, run_id=None, org_id="org_1", deployment_id=dep)
        assert _claim(queue, dep) is None  # not committed yet: invisible to workers
    task = _claim(queue, dep)
    assert task is not None and task.id == task_id


def test_complete_in_joins_the_callers_transaction(queue: TaskQueue, container: Container) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep)
    task = _claim(queue, dep)
    assert task is not None and task.id == task_id

    def record_then_fail() -> None:
        with container.db.transaction() as tx:
            queue.complete_in(tx, task.id, task.lease_token)
            raise RuntimeError("recording the run failed")

    with pytest.raises(RuntimeError):
        record_then_fail()
    still = queue.get(task_id)
    assert still is not None and still.state is TaskState.LEASED  # rolled back with the caller

    with container.db.transaction() as tx:
        queue.complete_in(tx, task.id, "not-the-lease")  # a lost lease changes nothing
    still = queue.get(task_id)
    assert still is not None and still.state is TaskState.LEASED

    with container.db.transaction() as tx:
        queue.complete_in(tx, task.id, task.lease_token)
    done = queue.get(task_id)
    assert done is not None and done.state is TaskState.DONE and done.finished_at is not None
    assert queue.complete(task_id, task.lease_token) is False


def test_claim_on_empty_queue_returns_none_after_the_wait(queue: TaskQueue) -> None:
    dep = _deployment()
    started = time.monotonic()
    assert _claim(queue, dep, wait=0.4) is None
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 2.0


def test_waiting_claim_wakes_up_on_enqueue(queue: TaskQueue) -> None:
    dep = _deployment()
    result: dict[str, Any] = {}

    def wait_for_task() -> None:
        result["task"] = _claim(queue, dep, wait=20.0)
        result["returned"] = time.monotonic()

    waiter = threading.Thread(target=wait_for_task)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)  # let it find nothing and go to sleep
    enqueued_at = time.monotonic()
    task_id = _enqueue(queue, dep)
    waiter.join(timeout=25)
    assert not waiter.is_alive()
    assert result["task"] is not None and result["task"].id == task_id
    # Woken by the notification: well before the 5 s poll, and nowhere near the 20 s wait.
    assert result["returned"] - enqueued_at < 2.0
    assert result["returned"] - started < POLL_INTERVAL


def test_expired_lease_is_redelivered_and_the_stale_lease_refused(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep)
    first = _claim(queue, dep, lease=1, worker="crashes")
    assert first is not None and first.attempt == 1
    time.sleep(1.2)

    second = _claim(queue, dep, worker="survivor")
    assert second is not None and second.id == task_id
    assert second.attempt == 2 and second.lease_token != first.lease_token

    assert queue.complete(task_id, first.lease_token) is False
    assert queue.heartbeat(task_id, first.lease_token, 30).ok is False
    with pytest.raises(LeaseLost):
        queue.fail(task_id, first.lease_token, "late", retryable=True)
    assert queue.complete(task_id, second.lease_token) is True
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.DONE and info.attempt == 2


def test_waiting_claim_picks_up_an_expiring_lease(queue: TaskQueue) -> None:
    dep = _deployment()
    _enqueue(queue, dep)
    assert _claim(queue, dep, lease=1) is not None
    started = time.monotonic()
    again = _claim(queue, dep, wait=10.0)
    assert again is not None and again.attempt == 2
    assert time.monotonic() - started < 3.0  # at the lease's expiry, not at the next 5 s poll


def test_lease_expiring_on_the_last_attempt_makes_the_task_dead(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep, max_attempts=1)
    assert _claim(queue, dep, lease=1) is not None
    time.sleep(1.2)
    assert _claim(queue, dep) is None
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.DEAD and "lease expired" in (info.last_error or "")


def test_concurrent_claimers_take_each_task_exactly_once(queue: TaskQueue, container: Container) -> None:
    dep = _deployment()
    with container.db.transaction() as tx:
        expected = {queue.enqueue(tx, kind="noop", payload={"i": i}, run_id=None, org_id="org_1",
                                  deployment_id=dep) for i in range(200)}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        while True:
            task = _claim(queue, dep, wait=0.3, worker=f"w{n}")
            if task is None:
                return
            assert queue.complete(task.id, task.lease_token)
            with lock:
                claimed.append(task.id)

    with futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(work, n) for n in range(8)]:
            f.result()
    assert len(claimed) == 200
    assert set(claimed) == expected


def test_batch_claims_lease_each_task_once_and_complete_many_honours_each_lease(
        queue: TaskQueue, container: Container) -> None:
    dep = _deployment()
    with container.db.transaction() as tx:
        ids = [queue.enqueue(tx, kind="noop", payload={"i": i}, run_id=None, org_id="org_1",
                             deployment_id=dep) for i in range(25)]
    first = queue.claim_batch(deployment_id=dep, worker_id="b1", lease_seconds=30, wait_seconds=0, limit=10)
    second = queue.claim_batch(deployment_id=dep, worker_id="b2", lease_seconds=30, wait_seconds=0, limit=10)
    rest = queue.claim_batch(deployment_id=dep, worker_id="b3", lease_seconds=30, wait_seconds=0, limit=10)
    assert [len(first), len(second), len(rest)] == [10, 10, 5]
    assert sorted(t.id for t in first + second + rest) == sorted(ids)  # no task twice
    assert all(t.attempt == 1 and t.lease_token for t in first)
    assert len({t.lease_token for t in first}) == 10  # a lease per task
    assert queue.claim_batch(deployment_id=dep, worker_id="b4", lease_seconds=30, wait_seconds=0, limit=10) == []

    # One stale token in the batch: that task stays leased, the others are done.
    stale = first[3]
    leases = [(t.id, t.lease_token) for t in first]
    leases[3] = (stale.id, "not-the-lease")
    done = queue.complete_many(leases)
    assert done == {t.id for t in first} - {stale.id}
    info = queue.get(stale.id)
    assert info is not None and info.state is TaskState.LEASED
    assert queue.complete_many([(t.id, t.lease_token) for t in first]) == {stale.id}  # the rest: already done
    assert queue.complete_many([]) == set()
    assert all(i is not None and i.state is TaskState.DONE for i in map(queue.get, [t.id for t in first]))
    with pytest.raises(ValueError):
        queue.claim_batch(deployment_id=dep, worker_id="b5", lease_seconds=30, wait_seconds=0, limit=0)
    with pytest.raises(ValueError):
        queue.complete_many([("t", "x")] * 101)


def test_concurrent_batch_claimers_take_each_task_exactly_once(queue: TaskQueue, container: Container) -> None:
    dep = _deployment()
    with container.db.transaction() as tx:
        expected = {queue.enqueue(tx, kind="noop", payload={"i": i}, run_id=None, org_id="org_1",
                                  deployment_id=dep) for i in range(300)}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        while True:
            batch = queue.claim_batch(deployment_id=dep, worker_id=f"w{n}", lease_seconds=30,
                                      wait_seconds=0.3, limit=7)
            if not batch:
                return
            assert queue.complete_many([(t.id, t.lease_token) for t in batch]) == {t.id for t in batch}
            with lock:
                claimed.extend(t.id for t in batch)

    with futures.ThreadPoolExecutor(6) as pool:
        for f in [pool.submit(work, n) for n in range(6)]:
            f.result()
    assert sorted(claimed) == sorted(expected)


def test_waiting_batch_claim_wakes_up_on_enqueue(queue: TaskQueue) -> None:
    dep = _deployment()
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(queue.claim_batch(
        deployment_id=dep, worker_id="w", lease_seconds=30, wait_seconds=10, limit=5)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    task_id = _enqueue(queue, dep)
    waiter.join(15)
    assert [t.id for t in result[0]] == [task_id]
    assert time.monotonic() - started < 5


def test_failures_back_off_retry_then_die_with_the_error_kept(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep, max_attempts=3)
    for attempt in (1, 2):
        task = _claim(queue, dep, wait=5.0)
        assert task is not None and task.attempt == attempt
        failed_at = datetime.now(UTC)
        assert queue.fail(task_id, task.lease_token, f"boom {attempt}", retryable=True) is TaskState.QUEUED
        info = queue.get(task_id)
        assert info is not None and info.state is TaskState.QUEUED and info.available_at is not None
        backoff = (info.available_at - failed_at).total_seconds()
        nominal = TEST_RETRY.nominal(attempt)
        assert nominal * (1 - TEST_RETRY.jitter) - 0.1 <= backoff <= nominal + 0.1
        assert _claim(queue, dep) is None  # still backing off
    last = _claim(queue, dep, wait=5.0)
    assert last is not None and last.attempt == 3
    assert queue.fail(task_id, last.lease_token, "boom 3", retryable=True) is TaskState.DEAD
    info = queue.get(task_id)
    assert info is not None and (info.state, info.attempt, info.last_error) == (TaskState.DEAD, 3, "boom 3")
    assert _claim(queue, dep, wait=0.5) is None


def test_non_retryable_failure_is_dead_at_once(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep)
    task = _claim(queue, dep)
    assert queue.fail(task_id, task.lease_token, "invalid inputs", retryable=False) is TaskState.DEAD
    info = queue.get(task_id)
    assert info is not None and info.state is TaskState.DEAD and info.last_error == "invalid inputs"


def test_cancel(queue: TaskQueue) -> None:
    dep = _deployment()
    queued = _enqueue(queue, dep)
    assert queue.request_cancel(queued) is TaskState.CANCELLED
    assert _claim(queue, dep) is None

    running = _enqueue(queue, dep)
    task = _claim(queue, dep)
    assert task is not None
    assert queue.request_cancel(running) is TaskState.LEASED  # its worker decides when to stop
    beat = queue.heartbeat(running, task.lease_token, 30)
    assert beat.ok and beat.cancel_requested
    assert queue.fail(running, task.lease_token, "cancelled by user", retryable=True) is TaskState.CANCELLED
    assert queue.request_cancel(running) is TaskState.CANCELLED

    finished = _enqueue(queue, dep)
    done = _claim(queue, dep)
    assert queue.complete(finished, done.lease_token)
    assert queue.request_cancel(finished) is TaskState.DONE
    assert queue.request_cancel("task_does_not_exist") is None


def test_cancel_of_an_expired_lease_takes_effect_at_once(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep)
    task = _claim(queue, dep, lease=1)
    time.sleep(1.2)
    assert queue.request_cancel(task_id) is TaskState.CANCELLED
    assert queue.complete(task_id, task.lease_token) is False
    assert _claim(queue, dep) is None


def test_heartbeat_extends_the_lease(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep)
    task = _claim(queue, dep, lease=1)
    beat = queue.heartbeat(task_id, task.lease_token, 30)
    assert beat.ok and not beat.cancel_requested
    assert beat.lease_expires_at is not None and beat.lease_expires_at > task.lease_expires_at
    time.sleep(1.2)
    assert _claim(queue, dep) is None  # the original 1 s lease would have expired
    assert queue.complete(task_id, task.lease_token) is True


def test_delayed_task_is_claimable_when_due(queue: TaskQueue) -> None:
    dep = _deployment()
    task_id = _enqueue(queue, dep, available_at=datetime.now(UTC) + timedelta(seconds=0.8))
    assert _claim(queue, dep) is None
    started = time.monotonic()
    task = _claim(queue, dep, wait=10.0)
    assert task is not None and task.id == task_id
    assert time.monotonic() - started < 3.0


def test_claims_are_scoped_to_a_deployment(queue: TaskQueue) -> None:
    mine, other = _deployment(), _deployment()
    task_id = _enqueue(queue, mine)
    assert _claim(queue, other) is None
    # A claimer for any deployment may meet other tests' leftovers: release those untouched.
    seen = set()
    for _ in range(1000):
        task = _claim(queue, None)
        assert task is not None, "the task was never offered to an any-deployment claimer"
        if task.id == task_id:
            break
        assert task.id not in seen
        seen.add(task.id)
        queue.complete(task.id, task.lease_token)


def test_invalid_arguments_are_refused(queue: TaskQueue) -> None:
    with pytest.raises(ValueError):
        _enqueue(queue, _deployment(), max_attempts=0)
    with pytest.raises(ValueError):
        _claim(queue, _deployment(), lease=0)


def test_asynchronous_acks_turn_synchronous_commit_off_once_per_statement(container: Container) -> None:
    # As a row filter set_config ran once per row scanned (every row of a sequential scan);
    # as an InitPlan it is a one-time filter, and still turns the commit asynchronous.
    sql = _Sql.build(durable_acks=False).heartbeat
    params = (5, 5, "task_none", "token")  # lease seconds (twice), task id, lease token
    with container.db.connection() as conn:
        with conn.transaction(force_rollback=True):
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (COSTS OFF, VERBOSE) {sql}", params))
            calls = [line.strip() for line in plan.splitlines() if "set_config" in line]
            assert "One-Time Filter" in plan and len(calls) == 1 and calls[0].startswith("Output:"), plan
            conn.execute(sql, params, prepare=True)
            assert conn.execute("SHOW synchronous_commit").fetchall() == [("off",)]
        assert conn.execute("SHOW synchronous_commit").fetchall() == [("on",)]


# -- the gcp adapter: what it pushes to Cloud Tasks -----------------------------------------------------
@pytest.fixture
def paused_cloud_queue(container: Container, tasks_emulator: str, tasks_client: Any,
                       push_target: PushTarget) -> Iterator[CloudTasksQueue]:
    """A gcp queue on a fresh, paused Cloud Tasks queue: pushes stay listed until resumed."""
    queue_path = _create_queue(tasks_client)
    tasks_client.pause_queue(name=queue_path)
    state = PgTaskQueue(container.db, listen_connect=connection_factory(container.settings),
                        retry=TEST_RETRY, poll_interval=POLL_INTERVAL)
    queue = CloudTasksQueue(state, queue_path=queue_path, target_url=push_target.url,
                            service_account_email=SERVICE_ACCOUNT, emulator_host=tasks_emulator,
                            push_kinds=frozenset({"agent_run"}))
    yield queue
    queue.close()


def _listed(client: Any, queue_path: str) -> dict[str, Any]:
    return {t.name.rsplit("/", 1)[-1]: t for t in client.list_tasks(parent=queue_path)}


@pytest.mark.emulator
def test_push_has_the_delivery_name_url_body_and_oidc_token(paused_cloud_queue: CloudTasksQueue,
                                                            tasks_client: Any, push_target: PushTarget) -> None:
    dep = _deployment()
    task_id = paused_cloud_queue.enqueue(None, kind="agent_run", payload={"inputs": {"secret": "x"}},
                                         run_id="run_push1", org_id="org_1", deployment_id=dep)
    name = cloud_task_name("run_push1", task_id, 1)
    listed = _listed(tasks_client, paused_cloud_queue.queue_path)
    assert list(listed) == [name]
    http = listed[name].http_request
    assert http.url == push_target.url
    assert http.oidc_token.service_account_email == SERVICE_ACCOUNT
    assert http.oidc_token.audience == push_target.url
    expected_body = {"task_id": task_id, "kind": "agent_run", "run_id": "run_push1", "org_id": "org_1",
                     "deployment_id": dep, "attempt": 1}
    assert json.loads(http.body) == expected_body  # identifiers only: inputs stay in PostgreSQL

    tasks_client.resume_queue(name=paused_cloud_queue.queue_path)
    delivered = push_target.server.wait_for(matching=lambda r: r.json() == expected_body, timeout=15)[0]
    assert delivered.target == "/jobs/agent_run"
    assert delivered.headers["x-cloudtasks-taskname"] == name
    # The push only wakes a worker: the task is still queued in PostgreSQL, claimable once.
    task = paused_cloud_queue.claim_next(deployment_id=dep, worker_id="job-1", lease_seconds=30, wait_seconds=0)
    assert task is not None and task.id == task_id


@pytest.mark.emulator
def test_only_pushed_kinds_are_pushed(paused_cloud_queue: CloudTasksQueue, tasks_client: Any) -> None:
    dep = _deployment()
    task_id = paused_cloud_queue.enqueue(None, kind="byoc_run", payload={}, run_id=None, org_id="org_1",
                                         deployment_id=dep)
    assert _listed(tasks_client, paused_cloud_queue.queue_path) == {}
    task = paused_cloud_queue.claim_next(deployment_id=dep, worker_id="byoc", lease_seconds=30, wait_seconds=0)
    assert task is not None and task.id == task_id


@pytest.mark.emulator
def test_retry_is_pushed_as_the_next_attempt_at_the_end_of_its_backoff(
        paused_cloud_queue: CloudTasksQueue, tasks_client: Any) -> None:
    dep = _deployment()
    task_id = paused_cloud_queue.enqueue(None, kind="agent_run", payload={}, run_id="run_retry", org_id="org_1",
                                         deployment_id=dep)
    task = paused_cloud_queue.claim_next(deployment_id=dep, worker_id="job", lease_seconds=30, wait_seconds=0)
    assert paused_cloud_queue.fail(task_id, task.lease_token, "transient", retryable=True) is TaskState.QUEUED
    info = paused_cloud_queue.get(task_id)
    listed = _listed(tasks_client, paused_cloud_queue.queue_path)
    retry_name = cloud_task_name("run_retry", task_id, 2)
    assert set(listed) == {cloud_task_name("run_retry", task_id, 1), retry_name}
    scheduled = listed[retry_name].schedule_time
    assert info is not None and info.available_at is not None
    assert abs((scheduled - info.available_at).total_seconds()) < 0.01


@pytest.mark.emulator
def test_relay_pushes_the_redelivery_of_an_expired_lease_once(paused_cloud_queue: CloudTasksQueue,
                                                              tasks_client: Any) -> None:
    dep = _deployment()
    task_id = paused_cloud_queue.enqueue(None, kind="agent_run", payload={}, run_id="run_relay", org_id="org_1",
                                         deployment_id=dep)
    assert paused_cloud_queue.claim_next(deployment_id=dep, worker_id="job", lease_seconds=1,
                                         wait_seconds=0) is not None
    time.sleep(1.2)
    redelivery = cloud_task_name("run_relay", task_id, 2)
    assert redelivery not in _listed(tasks_client, paused_cloud_queue.queue_path)
    # Other tests' expired leases are due too: relay until ours is pushed, then it is not pushed again.

    def relayed() -> bool:
        paused_cloud_queue.relay()
        return redelivery in _listed(tasks_client, paused_cloud_queue.queue_path)

    wait_until(relayed, timeout=30, interval=0.01, what=f"the relay to push {redelivery}")
    before = len(tasks_client.list_tasks(parent=paused_cloud_queue.queue_path).tasks)
    paused_cloud_queue.relay()
    names = [t.name for t in tasks_client.list_tasks(parent=paused_cloud_queue.queue_path)]
    assert names.count(f"{paused_cloud_queue.queue_path}/tasks/{redelivery}") == 1
    assert len(names) >= before


@pytest.mark.emulator
def test_a_failed_push_rolls_the_enqueue_back(container: Container, tasks_emulator: str,
                                              push_target: PushTarget) -> None:
    from google.api_core import exceptions as google_errors

    state = PgTaskQueue(container.db, retry=TEST_RETRY)
    queue = CloudTasksQueue(state, queue_path=f"{PROJECT_PARENT}/queues/does-not-exist",
                            target_url=push_target.url, service_account_email=SERVICE_ACCOUNT,
                            emulator_host=tasks_emulator)
    run_id = f"run_{uuid.uuid4().hex[:10]}"
    try:
        with pytest.raises(google_errors.GoogleAPICallError):
            queue.enqueue(None, kind="agent_run", payload={}, run_id=run_id, org_id="org_1",
                          deployment_id=_deployment())
    finally:
        queue.close()
    with container.db.transaction() as tx:
        assert tx.fetch_val("SELECT count(*) FROM tasks WHERE run_id = %s", run_id) == 0


@contextlib.contextmanager
def _grpc_server_answering_already_exists() -> Iterator[str]:
    """A Cloud Tasks endpoint whose CreateTask says ALREADY_EXISTS, as Google's does for a
    name in use (the emulator does not deduplicate names)."""
    import grpc
    from google.cloud.tasks_v2 import CreateTaskRequest, Task

    calls: list[str] = []

    def create_task(request: Any, context: Any) -> Any:
        calls.append(request.task.name)
        context.abort(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")

    handler = grpc.method_handlers_generic_handler("google.cloud.tasks.v2.CloudTasks", {
        "CreateTask": grpc.unary_unary_rpc_method_handler(
            create_task, request_deserializer=CreateTaskRequest.deserialize,
            response_serializer=Task.serialize),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
    assert calls, "CreateTask was never called"


@pytest.mark.emulator
def test_creating_an_existing_delivery_is_success(container: Container, push_target: PushTarget) -> None:
    with _grpc_server_answering_already_exists() as address:
        queue = CloudTasksQueue(PgTaskQueue(container.db), queue_path=f"{PROJECT_PARENT}/queues/q",
                                target_url=push_target.url, service_account_email=SERVICE_ACCOUNT,
                                emulator_host=address)
        try:
            name = queue.push(task_id="task_x", kind="agent_run", run_id="run_x", org_id="org_1",
                              deployment_id=None, attempt=3)
        finally:
            queue.close()
    assert name.endswith("/tasks/" + cloud_task_name("run_x", "task_x", 3))


def test_cloud_task_names_are_valid_and_distinct() -> None:
    names = {cloud_task_name(run, task, attempt)
             for run in ("run_a", "run_b", None, "run with/odd:chars")
             for task in ("task_1", "task_2") for attempt in (1, 2)}
    assert len(names) == 4 * 2 * 2
    for name in names:
        assert all(c.isalnum() or c in "-_" for c in name) and len(name) <= 500


# -- the backoff schedule -----------------------------------------------------------------------------
policies = st.builds(
    RetryPolicy,
    base_seconds=st.floats(min_value=0, max_value=60, allow_nan=False),
    factor=st.floats(min_value=1, max_value=10, allow_nan=False),
    cap_seconds=st.floats(min_value=0, max_value=3600, allow_nan=False),
    jitter=st.floats(min_value=0, max_value=1, allow_nan=False),
)
attempts = st.integers(min_value=1, max_value=200)


@given(policies, attempts)
def test_backoff_is_monotonic(policy: RetryPolicy, attempt: int) -> None:
    assert policy.nominal(attempt) <= policy.nominal(attempt + 1)


@given(policies, attempts)
def test_backoff_is_capped(policy: RetryPolicy, attempt: int) -> None:
    assert 0 <= policy.nominal(attempt) <= policy.cap_seconds


@given(policies, attempts, st.integers(min_value=0, max_value=2**32))
def test_jitter_stays_within_its_bounds(policy: RetryPolicy, attempt: int, seed: int) -> None:
    nominal = policy.nominal(attempt)
    delay = policy.delay(attempt, random.Random(seed))
    assert nominal * (1 - policy.jitter) - 1e-9 <= delay <= nominal + 1e-9


@given(st.floats(min_value=0.01, max_value=10), st.floats(min_value=1.01, max_value=4), attempts)
def test_backoff_grows_geometrically_until_the_cap(base: float, factor: float, attempt: int) -> None:
    policy = RetryPolicy(base_seconds=base, factor=factor, cap_seconds=1e9, jitter=0)
    expected = base * factor ** (attempt - 1)
    assert policy.nominal(attempt) == pytest.approx(min(expected, 1e9), rel=1e-9)


def test_jitter_spreads_retries() -> None:
    policy = RetryPolicy(base_seconds=10, cap_seconds=100, jitter=0.5)
    rng = random.Random(7)
    delays = {round(policy.delay(3, rng), 6) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 20 and max(delays) <= 40


def test_invalid_policies_are_refused() -> None:
    for kwargs in ({"base_seconds": -1}, {"factor": 0.5}, {"jitter": 1.5}):
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)
    with pytest.raises(ValueError):
        RetryPolicy().nominal(0)
