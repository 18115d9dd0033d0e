"""gcp mode's push target through the gateway: a Cloud Tasks push starts the deployment's Cloud Run job.

The push is authenticated with an OIDC token signed by a key this test serves as a JWKS (Google's
issuer and claims); the job is started through the real Cloud Run v2 client (REST transport)
against a recording server answering as the API does. The queue rows are the real ones a run
creates in the embedded PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from runs_support import claim, install_builtin, metrics, start_run
from support.http import Recorded, RecordingServer, Reply

from functions.scheduler import platform_jobs
from shared.composition import build_container
from shared.deployments.adapters.cloudrun_provisioner import CloudRunProvisioner, job_name_for
from shared.identity.adapters.oidc_verifier import OidcVerifier
from shared.identity.push_auth import PushAuth
from shared.kernel.ids import new_id
from shared.kernel.settings import Settings
from shared.runs.adapters.cloud_tasks_queue import CloudTasksQueue
from shared.runs.dispatch import DispatchService

GOOGLE = "https://accounts.google.com"
DISPATCH_URL = "https://europe-west1-acme.cloudfunctions.net/dispatch_task"
TASKS_SA = "cloud-tasks@acme.iam.gserviceaccount.com"
PROJECT, REGION = "acme", "europe-west1"


@pytest.fixture(scope="module")
def google_key() -> Iterator[tuple[Any, str]]:
    """A signing key and the URL of a JWKS that publishes it (as Google's certs endpoint does)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = {"keys": [{**jwk, "kid": "google-1", "alg": "RS256", "use": "sig"}]}
    with RecordingServer(lambda _request: Reply(200, jwks)) as server:
        yield key, f"{server.url}/oauth2/v3/certs"


def push_token(key: Any, *, email: str = TASKS_SA, aud: str = DISPATCH_URL, iss: str = GOOGLE,
               ttl: int = 300, kid: str = "google-1") -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "sub": "1049", "email": email, "email_verified": True,
              "iat": now, "exp": now + ttl}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


class CloudRun:
    """Answers ``jobs.run`` like Cloud Run v2 (a running operation), or fails on demand."""

    def __init__(self) -> None:
        self.fail = False
        self.server = RecordingServer(self._answer)

    def _answer(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path.endswith(":run") and not self.fail:
            job = request.path.removeprefix("/v2/").removesuffix(":run")
            operation = f"projects/{PROJECT}/locations/{REGION}/operations/op-{len(self.server.received())}"
            return Reply(200, {"name": operation, "done": False,
                               "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution",
                                            "name": f"{job}/executions/x1"}})
        return Reply(503, {"error": {"code": 503, "message": "backend unavailable", "status": "UNAVAILABLE"}})

    def runs(self) -> list[str]:
        return [r.path for r in self.server.received() if r.method == "POST"]


@pytest.fixture
def cloud_run() -> Iterator[CloudRun]:
    fake = CloudRun()
    yield fake
    fake.server.close()


@pytest.fixture
def dispatch(container: Any, cloud_run: CloudRun, google_key: tuple[Any, str],
             monkeypatch: pytest.MonkeyPatch) -> DispatchService:
    jobs = run_v2.JobsClient(transport="rest", credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": cloud_run.server.url})
    provisioner = CloudRunProvisioner(PROJECT, REGION, default_image="runner:1", jobs_client=jobs)
    verifier = OidcVerifier(issuer=GOOGLE, audience=DISPATCH_URL, jwks_url=google_key[1])
    service = DispatchService(container.db, container.deployments, provisioner, PushAuth(verifier, TASKS_SA))
    monkeypatch.setattr(container, "dispatch", service)
    return service


@pytest.fixture
def inst(container: Any, make_org: Any, anon: Any, settings: Any) -> Any:
    return install_builtin(container, make_org, anon, settings)


def _push(anon: Any, key: Any, run: dict[str, Any], attempt: int, **token: Any) -> Any:
    body = {"task_id": run["task_id"], "attempt": attempt, "kind": "agent_run", "run_id": run["id"],
            "org_id": run["org_id"], "deployment_id": run["deployment_id"]}
    return anon.post("/internal/tasks/dispatch", json=body, token=push_token(key, **token))


def _task_id(container: Any, run_id: str) -> str:
    with container.db.transaction() as tx:
        return str(tx.fetch_val("SELECT task_id FROM runs WHERE id = %s", run_id))


def _run(container: Any, inst: Any) -> dict[str, Any]:
    run = start_run(inst.admin, inst)
    return {**run, "task_id": _task_id(container, run["id"])}


def test_a_due_delivery_starts_the_deployments_job(dispatch: Any, cloud_run: CloudRun, inst: Any, anon: Any,
                                                   container: Any, google_key: Any) -> None:
    key = google_key[0]
    run = _run(container, inst)
    resp = _push(anon, key, run, 1)
    assert resp.status == 200, resp
    assert resp.body["outcome"] == "started" and resp.body["execution"].startswith(
        f"projects/{PROJECT}/locations/{REGION}/operations/")
    job = f"/v2/projects/{PROJECT}/locations/{REGION}/jobs/{job_name_for(inst.deployment_id)}:run"
    assert cloud_run.runs() == [job]

    # A stale or future delivery number starts nothing.
    assert _push(anon, key, run, 3).body == {"outcome": "dropped", "reason": "stale_delivery", "execution": None}

    # Leased by the execution that started: a duplicate push starts nothing while the lease lives.
    task = claim(anon, inst.key, wait=5)
    assert task is not None and task["run_id"] == run["id"]
    assert _push(anon, key, run, 1).body["reason"] == "lease_held"
    assert _push(anon, key, run, 2).body["reason"] == "lease_held"

    done = anon.post(f"/agents/{inst.agent_id}/runs/{run['id']}/complete", token=inst.key,
                     json={"task_id": task["task_id"], "lease_token": task["lease_token"], "status": "succeeded",
                           "outputs": {}, "metrics": metrics()})
    assert done.status == 200, done
    assert _push(anon, key, run, 2).body["reason"] == "task_finished"
    assert cloud_run.runs() == [job]  # one execution in all


def test_a_push_for_a_byoc_deployment_starts_nothing(dispatch: Any, cloud_run: CloudRun, inst: Any, anon: Any,
                                                     container: Any, google_key: Any) -> None:
    run = _run(container, inst)
    with container.db.transaction() as tx:
        tx.execute("UPDATE deployments SET deployment_type = 'byoc' WHERE id = %s", inst.deployment_id)
    resp = _push(anon, google_key[0], run, 1)
    assert resp.body["reason"] == "deployment_not_pushed"
    assert cloud_run.runs() == []


@pytest.mark.parametrize("status", ["upgrade_pending_consent", "unreachable"])
def test_a_run_on_a_deployment_that_keeps_running_gets_its_job(dispatch: Any, cloud_run: CloudRun, inst: Any,
                                                               anon: Any, container: Any, google_key: Any,
                                                               status: str) -> None:
    # A run accepted on a deployment (upgrade pending the admin's consent keeps the old version
    # running) must not be left queued with no job: the push starts the deployment's job.
    run = _run(container, inst)
    with container.db.transaction() as tx:
        tx.execute("UPDATE deployments SET status = %s WHERE id = %s", status, inst.deployment_id)
    resp = _push(anon, google_key[0], run, 1)
    assert resp.status == 200 and resp.body["outcome"] == "started", resp
    assert len(cloud_run.runs()) == 1


def test_an_invisible_task_is_retried_while_young_and_dropped_when_old(dispatch: Any, cloud_run: CloudRun,
                                                                       anon: Any, google_key: Any) -> None:
    young = {"task_id": new_id("task"), "id": "run_x", "org_id": "org_x", "deployment_id": "dep_x"}
    resp = _push(anon, google_key[0], young, 1)
    assert resp.status == 503 and resp.body["error"]["code"] == "task_not_visible"

    old_ms = int((time.time() - 3600) * 1000)
    body = base64.b32encode(old_ms.to_bytes(6, "big") + b"\x00" * 10).decode().lower().rstrip("=")
    old = {**young, "task_id": f"task_{body}"}
    resp = _push(anon, google_key[0], old, 1)
    assert resp.status == 200 and resp.body["reason"] == "unknown_task"
    assert cloud_run.runs() == []


def test_a_job_that_cannot_start_is_retried_by_cloud_tasks(dispatch: Any, cloud_run: CloudRun, inst: Any,
                                                           anon: Any, container: Any, google_key: Any) -> None:
    run = _run(container, inst)
    cloud_run.fail = True
    resp = _push(anon, google_key[0], run, 1)
    assert resp.status == 503 and resp.body["error"]["code"] == "job_start_failed"
    cloud_run.fail = False
    assert _push(anon, google_key[0], run, 1).body["outcome"] == "started"


@pytest.mark.parametrize(("token", "status"), [
    ({"email": "someone@acme.iam.gserviceaccount.com"}, 403),
    ({"aud": "https://elsewhere.example/dispatch"}, 401),
    ({"iss": "https://issuer.example"}, 401),
    ({"ttl": -60}, 401),
    ({"kid": "unknown-key"}, 401),
])
def test_only_the_queues_service_account_may_push(dispatch: Any, cloud_run: CloudRun, inst: Any, anon: Any,
                                                  container: Any, google_key: Any, token: dict[str, Any],
                                                  status: int) -> None:
    run = _run(container, inst)
    resp = _push(anon, google_key[0], run, 1, **token)
    assert resp.status == status, resp
    assert cloud_run.runs() == []


def test_pushes_without_a_token_or_with_a_bad_body_change_nothing(dispatch: Any, cloud_run: CloudRun, inst: Any,
                                                                  anon: Any, container: Any,
                                                                  google_key: Any) -> None:
    run = _run(container, inst)
    body = {"task_id": run["task_id"], "attempt": 1, "kind": "agent_run", "org_id": run["org_id"]}
    assert anon.post("/internal/tasks/dispatch", json=body).status == 401
    assert anon.post("/internal/tasks/dispatch", json=body, token="not-a-jwt").status == 401
    bad = anon.post("/internal/tasks/dispatch", json={**body, "attempt": 0},
                    token=push_token(google_key[0]))
    assert bad.status == 422 and bad.body["error"]["details"][0]["path"] == "attempt"
    assert cloud_run.runs() == []


def test_local_mode_has_no_push_target(anon: Any, container: Any) -> None:
    assert container.dispatch is None
    resp = anon.post("/internal/tasks/dispatch", json={"task_id": "task_x", "attempt": 1, "kind": "k",
                                                      "org_id": "org_x"})
    assert resp.status == 404


def test_gcp_mode_wires_cloud_tasks_the_dispatch_target_and_the_relay(database_url: str) -> None:
    gcp = {"mode": "gcp", "database_url": database_url, "oidc_issuer": "https://issuer.example",
           "gcp_project": PROJECT, "packages_bucket": f"{PROJECT}-agent-packages",
           "kms_key": f"projects/{PROJECT}/locations/{REGION}/keyRings/marketplace/cryptoKeys/data-keys",
           "runs_queue": f"projects/{PROJECT}/locations/{REGION}/queues/runs",
           "dispatch_url": DISPATCH_URL, "tasks_invoker": TASKS_SA,
           "scheduled_url": "https://europe-west1-acme.cloudfunctions.net/run_scheduled_job",
           "scheduler_invoker": "scheduler@acme.iam.gserviceaccount.com"}
    container = build_container(Settings(**gcp), migrate=False)
    try:
        assert isinstance(container.queue, CloudTasksQueue)
        assert container.queue.target_url == DISPATCH_URL and container.queue.push_kinds == {"agent_run"}
        assert container.dispatch is not None and container.dispatch.auth.service_account == TASKS_SA
        assert "queue-relay" in {job.name for job in platform_jobs(container)}
        assert container.scheduler_auth is not None
        assert container.scheduler_auth.service_account == "scheduler@acme.iam.gserviceaccount.com"
    finally:
        container.close()
    without_queue = build_container(Settings(**{**gcp, "runs_queue": None}), migrate=False)
    try:
        assert not isinstance(without_queue.queue, CloudTasksQueue) and without_queue.dispatch is None
    finally:
        without_queue.close()
    with pytest.raises(RuntimeError, match="DISPATCH_URL"):
        build_container(Settings(**{**gcp, "dispatch_url": None}), migrate=False)


# -- the Cloud Scheduler target ------------------------------------------------------------------
SCHEDULED_URL = "https://europe-west1-acme.cloudfunctions.net/run_scheduled_job"
SCHEDULER_SA = "scheduler@acme.iam.gserviceaccount.com"


@pytest.fixture
def scheduler_auth(container: Any, google_key: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> PushAuth:
    auth = PushAuth(OidcVerifier(issuer=GOOGLE, audience=SCHEDULED_URL, jwks_url=google_key[1]), SCHEDULER_SA)
    monkeypatch.setattr(container, "scheduler_auth", auth)
    return auth


def test_cloud_scheduler_runs_a_platform_job_by_name(scheduler_auth: PushAuth, inst: Any, anon: Any,
                                                      container: Any, google_key: Any) -> None:
    key = google_key[0]
    token = push_token(key, email=SCHEDULER_SA, aud=SCHEDULED_URL)
    with container.db.transaction() as tx:  # silent for long enough to count as unreachable
        tx.execute("UPDATE deployments SET last_heartbeat_at = now() - interval '1 hour' WHERE id = %s",
                   inst.deployment_id)
    resp = anon.post("/internal/scheduled", json={"job": "deployments-unreachable"}, token=token)
    assert resp.status == 200, resp
    assert resp.body["job"] == "deployments-unreachable" and resp.body["handled"] >= 1
    assert inst.admin.get(f"/orgs/{inst.org_id}/deployments/{inst.deployment_id}").body["status"] == "unreachable"

    for job in ("runs-reconcile", "webhooks-deliver"):
        ran = anon.post("/internal/scheduled", json={"job": job}, token=token)
        assert ran.status == 200 and ran.body["handled"] >= 0, ran
    unknown = anon.post("/internal/scheduled", json={"job": "queue-relay"}, token=token)  # no push queue here
    assert unknown.status == 422 and "deployments-unreachable" in unknown.body["error"]["details"][0]["message"]
    # Another account's token, or the dispatch audience, runs nothing.
    assert anon.post("/internal/scheduled", json={"job": "runs-reconcile"}, token=push_token(key)).status == 401
    assert anon.post("/internal/scheduled", json={"job": "runs-reconcile"},
                     token=push_token(key, aud=SCHEDULED_URL)).status == 403
    assert anon.post("/internal/scheduled", json={"job": "runs-reconcile"}).status == 401


def test_local_mode_has_no_scheduler_target(anon: Any, container: Any) -> None:
    assert container.scheduler_auth is None
    assert anon.post("/internal/scheduled", json={"job": "runs-reconcile"}).status == 404
