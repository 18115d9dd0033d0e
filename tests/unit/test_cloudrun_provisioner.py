"""CloudRunProvisioner against the real Cloud Run v2 and Secret Manager v1 clients, and IAM's REST API.

No emulator exists for Cloud Run, so the clients run their REST transport against a small
recording HTTP server started here, which answers as the Google APIs do (long-running
``Operation`` JSON, resources, and Google's JSON error bodies). Every test asserts the exact
requests the client libraries sent. IAM is called through google-auth's ``AuthorizedSession``
(the adapter's own choice: ``google-cloud-iam`` has no REST transport), pointed at the same server.
"""

from __future__ import annotations

import base64
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as google_errors
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import run_v2, secretmanager_v1
from support.http import Recorded, RecordingServer, Reply

from shared.deployments.adapters.cloudrun_provisioner import (
    CloudRunProvisioner,
    account_id_for,
    crc32c,
    job_name_for,
    label_value,
    secret_id_for,
)
from shared.deployments.ports import DataPlaneSpec
from shared.kernel.ids import new_id

PROJECT = "acme-prod"
REGION = "europe-west1"
DEFAULT_IMAGE = "us-docker.pkg.dev/agent-marketplace/runner/data-plane:1.4.0"
API_KEY = "mk.key01.Zq3vT9sLx2WmR8pK4nB7cY1dF6gH0jAe"
DEPLOYMENT = "dep_01jq7k2m3n4p5r6s7t8v9w0xyz"
JOB_NAME = "dep-01jq7k2m3n4p5r6s7t8v9w0xyz"
SECRET = f"projects/{PROJECT}/secrets/dataplane-{DEPLOYMENT}"
LOCATION = f"projects/{PROJECT}/locations/{REGION}"
JOB = f"{LOCATION}/jobs/{JOB_NAME}"
OPERATION = f"{LOCATION}/operations/op-7f3a"
ACCOUNT_ID = "dep-01jq7k2m3n4p5r6s7t8v9w0xyz"
SERVICE_ACCOUNT = f"{ACCOUNT_ID}@{PROJECT}.iam.gserviceaccount.com"
ACCOUNTS = f"/v1/projects/{PROJECT}/serviceAccounts"
ACCOUNT = f"{ACCOUNTS}/{SERVICE_ACCOUNT}"
SET_POLICY = f"/v1/{SECRET}:setIamPolicy"
ONLY_THE_ACCOUNT = {"bindings": [{"role": "roles/secretmanager.secretAccessor",
                                  "members": [f"serviceAccount:{SERVICE_ACCOUNT}"]}]}

_JOB_NAME_RULE = re.compile(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?")
_ACCOUNT_ID_RULE = re.compile(r"[a-z][-a-z0-9]{4,28}[a-z0-9]")
_JOB_TYPE = "type.googleapis.com/google.cloud.run.v2.Job"


# -- the recording server -----------------------------------------------------------------------
class FakeGoogleApis:
    """Answers scripted responses per (method, path) and records every request.

    A route scripted with several responses answers them in order and then repeats the last.
    An unscripted request gets a 400 INVALID_ARGUMENT, so it fails the test loudly.
    """

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self._lock = threading.Lock()
        self._server = RecordingServer(self._respond)
        self.url = self._server.url

    @property
    def requests(self) -> list[Recorded]:
        return self._server.received()

    def on(self, method: str, path: str, *responses: tuple[int, Any]) -> None:
        self._routes[(method, path)] = list(responses)

    def _respond(self, request: Recorded) -> Reply:
        with self._lock:
            queue = self._routes.get((request.method, request.path))
            if not queue:
                status, body = error(400, "INVALID_ARGUMENT", f"unscripted {request.method} {request.path}")
            else:
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return Reply(status, body)

    def calls(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path, query) of every request, without the ``$alt`` the REST transport always adds."""
        return [(r.method, r.path, {k: v for k, v in r.query.items() if k != "$alt"}) for r in self.requests]

    def close(self) -> None:
        self._server.close()


def error(status: int, code: str, message: str) -> tuple[int, Any]:
    """Google's JSON error body."""
    return status, {"error": {"code": status, "message": message, "status": code}}


def operation(*, done: bool = True, job: str = JOB, failure: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A Cloud Run long-running operation, finished with the job (or the failure) when ``done``."""
    body: dict[str, Any] = {"name": OPERATION, "done": done,
                            "metadata": {"@type": _JOB_TYPE, "name": job}}
    if done and failure is not None:
        body["error"] = failure
    elif done:
        body["response"] = {"@type": _JOB_TYPE, "name": job, "uid": "4e0c0c8e"}
    return 200, body


def version(n: int) -> dict[str, Any]:
    return {"name": f"projects/123456789/secrets/dataplane-{DEPLOYMENT}/versions/{n}", "state": 1}


def script_secret(fake: FakeGoogleApis, *, exists: bool = False, enabled: tuple[int, ...] = (1,),
                  new_version: int = 1, account_exists: bool = False) -> None:
    """Secret Manager and IAM answers for a provision: create the secret (or 409), add the
    version, list enabled ones; create the account (or 409), set the secret's policy."""
    fake.on("POST", ACCOUNTS,
            error(409, "ALREADY_EXISTS", f"Service account {ACCOUNT_ID} already exists within project "
                                         f"projects/{PROJECT}.") if account_exists else
            (200, {"name": f"projects/{PROJECT}/serviceAccounts/{SERVICE_ACCOUNT}", "projectId": PROJECT,
                   "uniqueId": "104455817718294457381", "email": SERVICE_ACCOUNT,
                   "displayName": f"Data plane {ACCOUNT_ID}"}))
    fake.on("POST", SET_POLICY, (200, {**ONLY_THE_ACCOUNT, "etag": "BwYQ1Xf2Kxk="}))
    fake.on("POST", f"/v1/projects/{PROJECT}/secrets",
            error(409, "ALREADY_EXISTS", f"Secret [{SECRET}] already exists.") if exists else
            (200, {"name": SECRET, "replication": {"automatic": {}}, "createTime": "2025-01-01T00:00:00Z"}))
    fake.on("POST", f"/v1/{SECRET}:addVersion", (200, version(new_version)))
    fake.on("GET", f"/v1/{SECRET}/versions", (200, {"versions": [version(n) for n in enabled],
                                                    "totalSize": len(enabled)}))


@pytest.fixture
def fake() -> Iterator[FakeGoogleApis]:
    server = FakeGoogleApis()
    yield server
    server.close()


def make_provisioner(fake: FakeGoogleApis, **kwargs: Any) -> CloudRunProvisioner:
    options = {"api_endpoint": fake.url}
    jobs = run_v2.JobsClient(transport="rest", credentials=AnonymousCredentials(), client_options=options)
    secrets = secretmanager_v1.SecretManagerServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                                          client_options=options)
    iam = AuthorizedSession(AnonymousCredentials())  # type: ignore[no-untyped-call]
    kwargs.setdefault("grant_retry_delays", ())
    return CloudRunProvisioner(PROJECT, REGION, default_image=DEFAULT_IMAGE, jobs_client=jobs,
                               secrets_client=secrets, iam_session=iam, iam_endpoint=fake.url, **kwargs)


@pytest.fixture
def provisioner(fake: FakeGoogleApis) -> CloudRunProvisioner:
    return make_provisioner(fake)


def make_spec(**overrides: Any) -> DataPlaneSpec:
    values: dict[str, Any] = {
        "deployment_id": DEPLOYMENT, "org_id": "org_01jq7k0000acme", "agent_name": "cost-anomaly",
        "agent_version": "1.2.0", "image": None, "control_plane_url": "https://api.marketplace.example",
        "api_key": API_KEY, "timeout_seconds": 1800, "cpu": "2", "memory": "4Gi",
        "config": {"threshold": 0.2, "accounts": ["billing-1"]},
    }
    values.update(overrides)
    return DataPlaneSpec(**values)


def expected_job(image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """The job body Cloud Run must receive for ``make_spec()`` (REST JSON, camelCase)."""
    labels = {"marketplace-deployment": DEPLOYMENT, "marketplace-org": "org_01jq7k0000acme"}
    return {
        "labels": labels,
        "template": {
            "labels": labels,
            "taskCount": 1,
            "parallelism": 1,
            "template": {
                "containers": [{
                    "name": "data-plane",
                    "image": image,
                    "command": ["python", "-m", "jobs.agent_run"],
                    "env": [
                        {"name": "MARKETPLACE_CONTROL_PLANE_URL", "value": "https://api.marketplace.example"},
                        {"name": "MARKETPLACE_DEPLOYMENT_ID", "value": DEPLOYMENT},
                        {"name": "MARKETPLACE_AGENT", "value": "cost-anomaly@1.2.0"},
                        {"name": "MARKETPLACE_AGENT_CONFIG",
                         "value": '{"accounts":["billing-1"],"threshold":0.2}'},
                        {"name": "MARKETPLACE_DATAPLANE_KEY",
                         "valueSource": {"secretKeyRef": {"secret": SECRET, "version": "latest"}}},
                    ],
                    "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
                }],
                "timeout": "1800s",
                "maxRetries": 1,
                "serviceAccount": SERVICE_ACCOUNT,
            },
        },
    }


def key_forms(key: str = API_KEY) -> list[bytes]:
    """The key as it could travel: clear, base64 and URL-safe base64."""
    raw = key.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), base64.b64encode(raw).rstrip(b"=")]


# -- names --------------------------------------------------------------------------------------
def test_platform_deployment_ids_map_to_readable_job_names() -> None:
    assert job_name_for(DEPLOYMENT) == JOB_NAME
    generated = new_id("dep")
    assert job_name_for(generated) == generated.replace("_", "-")
    assert _JOB_NAME_RULE.fullmatch(job_name_for(generated))


@pytest.mark.parametrize("deployment_id", [
    "DEP_Upper", "dep-already-hyphenated", "9lives", "__", "dep.x", "dep/x", "dép_ünïcode",
    "dep_" + "a" * 60, "dep_trailing_", "-" * 80,
])
def test_other_ids_are_sanitized_deterministically_and_hashed(deployment_id: str) -> None:
    name = job_name_for(deployment_id)
    assert _JOB_NAME_RULE.fullmatch(name), name
    assert len(name) <= 49
    assert name == job_name_for(deployment_id)
    assert re.search(r"-[0-9a-f]{8}$", name)


def test_ids_that_sanitize_alike_get_distinct_job_names() -> None:
    names = {job_name_for(i) for i in ("dep.x", "dep/x", "DEP_X", "dep-x", "dep x")}
    assert len(names) == 5
    assert job_name_for("9lives").startswith("d-9lives-")


def test_secret_ids_and_labels_follow_google_rules() -> None:
    assert secret_id_for(DEPLOYMENT) == f"dataplane-{DEPLOYMENT}"
    odd = secret_id_for("dep.x/y")
    assert re.fullmatch(r"dataplane-dep-x-y-[0-9a-f]{8}", odd)
    assert secret_id_for("dep.x/y") != secret_id_for("dep-x-y")
    long_id = secret_id_for("d" * 400)
    assert len(long_id) <= 255
    assert re.fullmatch(r"[A-Za-z0-9_-]+", long_id)
    assert label_value("Org_ABC.def") == "org_abc_def"
    assert len(label_value("o" * 100)) == 63


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


# -- provision ----------------------------------------------------------------------------------
def test_provision_stores_the_key_then_creates_the_job(fake: FakeGoogleApis,
                                                       provisioner: CloudRunProvisioner) -> None:
    script_secret(fake)
    fake.on("POST", f"/v2/{LOCATION}/jobs", operation())

    provisioner.provision(make_spec())

    assert fake.calls() == [
        ("POST", f"/v1/projects/{PROJECT}/secrets", {"secretId": f"dataplane-{DEPLOYMENT}"}),
        ("POST", f"/v1/{SECRET}:addVersion", {}),
        ("GET", f"/v1/{SECRET}/versions", {"filter": "state:ENABLED"}),
        ("POST", ACCOUNTS, {}),
        ("POST", SET_POLICY, {}),
        ("POST", f"/v2/{LOCATION}/jobs", {"jobId": JOB_NAME}),
    ]
    create_secret, add_version, _, create_account, set_policy, create_job = fake.requests
    assert create_secret.json() == {"replication": {"automatic": {}},
                                  "labels": {"marketplace-deployment": DEPLOYMENT,
                                             "marketplace-org": "org_01jq7k0000acme"}}
    payload = add_version.json()["payload"]
    assert base64.b64decode(payload["data"]).decode() == API_KEY
    assert int(payload["dataCrc32c"]) == crc32c(API_KEY.encode())
    assert create_account.json() == {"accountId": ACCOUNT_ID, "serviceAccount": {
        "displayName": f"Data plane {ACCOUNT_ID}",
        "description": f"Agent Marketplace data plane of deployment {DEPLOYMENT}"}}
    # The whole policy is replaced: the deployment's own account is the only reader.
    assert set_policy.json() == {"policy": ONLY_THE_ACCOUNT}
    assert create_job.json() == expected_job()
    assert create_job.json()["template"]["template"]["serviceAccount"] == SERVICE_ACCOUNT


def test_provision_updates_an_existing_job_and_destroys_older_key_versions(
        fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    # Version 4 was added by a concurrent provision after ours (3): it must survive.
    script_secret(fake, exists=True, enabled=(1, 2, 3, 4), new_version=3, account_exists=True)
    for n in (1, 2):
        fake.on("POST", f"/v1/projects/123456789/secrets/dataplane-{DEPLOYMENT}/versions/{n}:destroy",
                (200, {**version(n), "state": 3}))
    fake.on("POST", f"/v2/{LOCATION}/jobs", error(409, "ALREADY_EXISTS", f"Resource '{JOB_NAME}' already exists."))
    fake.on("PATCH", f"/v2/{JOB}", operation())

    provisioner.provision(make_spec(image="europe-docker.pkg.dev/acme/agents/cost-anomaly:1.2.0"))

    assert fake.calls() == [
        ("POST", f"/v1/projects/{PROJECT}/secrets", {"secretId": f"dataplane-{DEPLOYMENT}"}),
        ("POST", f"/v1/{SECRET}:addVersion", {}),
        ("GET", f"/v1/{SECRET}/versions", {"filter": "state:ENABLED"}),
        ("POST", f"/v1/projects/123456789/secrets/dataplane-{DEPLOYMENT}/versions/1:destroy", {}),
        ("POST", f"/v1/projects/123456789/secrets/dataplane-{DEPLOYMENT}/versions/2:destroy", {}),
        ("POST", ACCOUNTS, {}),
        ("POST", SET_POLICY, {}),
        ("POST", f"/v2/{LOCATION}/jobs", {"jobId": JOB_NAME}),
        ("PATCH", f"/v2/{JOB}", {"allowMissing": "true"}),
    ]
    image = "europe-docker.pkg.dev/acme/agents/cost-anomaly:1.2.0"
    # The update carries the job's name in its URL (REST transcoding takes it out of the body).
    assert fake.requests[-2].json() == expected_job(image)
    assert fake.requests[-1].json() == expected_job(image)


def test_the_key_never_reaches_cloud_run_nor_the_logs(fake: FakeGoogleApis, provisioner: CloudRunProvisioner,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    script_secret(fake)
    fake.on("POST", f"/v2/{LOCATION}/jobs", operation(), error(409, "ALREADY_EXISTS", "exists"))
    fake.on("PATCH", f"/v2/{JOB}", operation())
    fake.on("DELETE", f"/v2/{JOB}", operation())
    fake.on("DELETE", f"/v1/{SECRET}", (200, {}))
    fake.on("DELETE", ACCOUNT, (200, {}))

    provisioner.provision(make_spec())
    provisioner.provision(make_spec())  # the update path
    provisioner.deprovision(DEPLOYMENT)

    with_key = [r for r in fake.requests if any(form in r.target.encode() + r.body for form in key_forms())]
    assert [(r.method, r.path) for r in with_key] == [("POST", f"/v1/{SECRET}:addVersion")] * 2
    cloud_run = [r for r in fake.requests if r.path.startswith("/v2/")]
    assert len(cloud_run) == 4
    assert caplog.records, "the provisioner logs what it does"
    logged = caplog.text.encode()
    assert not any(form in logged for form in key_forms())
    assert API_KEY not in repr(make_spec())


def test_provision_waits_for_a_running_operation(fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    script_secret(fake)
    fake.on("POST", f"/v2/{LOCATION}/jobs", operation(done=False))
    fake.on("GET", f"/v2/{OPERATION}", operation())

    provisioner.provision(make_spec())

    assert fake.calls()[-2:] == [("POST", f"/v2/{LOCATION}/jobs", {"jobId": JOB_NAME}),
                                 ("GET", f"/v2/{OPERATION}", {})]


def test_the_wait_for_an_operation_is_bounded(fake: FakeGoogleApis) -> None:
    provisioner = make_provisioner(fake, operation_timeout=0.05)
    script_secret(fake)
    fake.on("POST", f"/v2/{LOCATION}/jobs", operation(done=False))
    fake.on("GET", f"/v2/{OPERATION}", operation(done=False))

    with pytest.raises(TimeoutError):
        provisioner.provision(make_spec())


def test_a_failed_operation_raises_without_the_key(fake: FakeGoogleApis,
                                                   provisioner: CloudRunProvisioner) -> None:
    script_secret(fake)
    fake.on("POST", f"/v2/{LOCATION}/jobs",
            operation(failure={"code": 9, "message": "Image 'europe-docker.pkg.dev/x/y:1' not found."}))

    with pytest.raises(google_errors.GoogleAPICallError, match="not found") as caught:
        provisioner.provision(make_spec(image="europe-docker.pkg.dev/x/y:1"))
    assert API_KEY not in str(caught.value)


def test_other_cloud_run_errors_propagate(fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    script_secret(fake)
    fake.on("POST", f"/v2/{LOCATION}/jobs",
            error(403, "PERMISSION_DENIED", "Permission 'run.jobs.create' denied on resource."))

    with pytest.raises(google_errors.Forbidden):
        provisioner.provision(make_spec())
    assert ("PATCH", f"/v2/{JOB}") not in [(r.method, r.path) for r in fake.requests]


def test_a_failed_version_cleanup_is_logged_and_the_job_still_created(
        fake: FakeGoogleApis, provisioner: CloudRunProvisioner, caplog: pytest.LogCaptureFixture) -> None:
    script_secret(fake)
    fake.on("GET", f"/v1/{SECRET}/versions",
            error(403, "PERMISSION_DENIED", "Permission 'secretmanager.versions.list' denied."))
    fake.on("POST", f"/v2/{LOCATION}/jobs", operation())

    provisioner.provision(make_spec())

    assert fake.calls()[-1] == ("POST", f"/v2/{LOCATION}/jobs", {"jobId": JOB_NAME})
    assert any(r.levelno == logging.WARNING and "older versions" in r.getMessage() for r in caplog.records)


# -- deprovision --------------------------------------------------------------------------------
def test_deprovision_deletes_the_job_then_the_secret_then_the_account(fake: FakeGoogleApis,
                                                                      provisioner: CloudRunProvisioner) -> None:
    fake.on("DELETE", f"/v2/{JOB}", operation())
    fake.on("DELETE", f"/v1/{SECRET}", (200, {}))
    fake.on("DELETE", ACCOUNT, (200, {}))

    provisioner.deprovision(DEPLOYMENT)

    assert fake.calls() == [("DELETE", f"/v2/{JOB}", {}), ("DELETE", f"/v1/{SECRET}", {}),
                            ("DELETE", ACCOUNT, {})]
    assert all(r.body == b"" for r in fake.requests)


def test_deprovision_is_idempotent(fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    fake.on("DELETE", f"/v2/{JOB}", error(404, "NOT_FOUND", f"Resource '{JOB_NAME}' was not found"))
    fake.on("DELETE", f"/v1/{SECRET}", error(404, "NOT_FOUND", f"Secret [{SECRET}] not found."))
    fake.on("DELETE", ACCOUNT, error(404, "NOT_FOUND", f"Service account {SERVICE_ACCOUNT} does not exist."))

    provisioner.deprovision(DEPLOYMENT)
    provisioner.deprovision(DEPLOYMENT)

    assert fake.calls() == [("DELETE", f"/v2/{JOB}", {}), ("DELETE", f"/v1/{SECRET}", {}),
                            ("DELETE", ACCOUNT, {})] * 2


def test_deprovision_keeps_the_secret_while_the_job_could_not_be_deleted(
        fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    fake.on("DELETE", f"/v2/{JOB}", error(403, "PERMISSION_DENIED", "Permission 'run.jobs.delete' denied."))

    with pytest.raises(google_errors.Forbidden):
        provisioner.deprovision(DEPLOYMENT)
    assert fake.calls() == [("DELETE", f"/v2/{JOB}", {})]


# -- cold start ---------------------------------------------------------------------------------
def test_importing_and_constructing_the_adapter_loads_no_google_sdk() -> None:
    code = ("import sys; base = set(sys.modules); "
            "from shared.deployments.adapters.cloudrun_provisioner import CloudRunProvisioner; "
            "p = CloudRunProvisioner('p', 'r', default_image='img'); "
            "p.job_path('dep_x'); p.secret_path('dep_x'); p.account_path('dep_x'); p.close(); "
            "print(sorted(n for n in set(sys.modules) - base "
            "if n.startswith(('google', 'grpc', 'proto', 'requests'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_start_execution_runs_the_deployments_job_without_waiting(fake: FakeGoogleApis,
                                                                  provisioner: CloudRunProvisioner) -> None:
    running = {"name": f"{LOCATION}/operations/exec-42", "done": False,
               "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Execution",
                            "name": f"{JOB}/executions/{JOB_NAME}-x7k2p"}}
    fake.on("POST", f"/v2/{JOB}:run", (200, running))

    assert provisioner.start_execution(DEPLOYMENT) == f"{LOCATION}/operations/exec-42"
    assert fake.calls() == [("POST", f"/v2/{JOB}:run", {})]  # started, not polled to its end


def test_start_execution_of_a_missing_job_raises(fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    fake.on("POST", f"/v2/{JOB}:run", error(404, "NOT_FOUND", f"Resource '{JOB_NAME}' was not found"))
    with pytest.raises(google_errors.NotFound):
        provisioner.start_execution(DEPLOYMENT)


# -- per-deployment identity ----------------------------------------------------------------------
def test_platform_deployment_ids_map_to_readable_account_ids() -> None:
    assert account_id_for(DEPLOYMENT) == ACCOUNT_ID
    generated = new_id("dep")
    assert account_id_for(generated) == generated.replace("_", "-")
    assert _ACCOUNT_ID_RULE.fullmatch(account_id_for(generated))


@pytest.mark.parametrize("deployment_id", [
    "DEP_Upper", "dep-already-hyphenated", "9lives", "__", "", "dep.x", "dep/x", "dép_ünïcode",
    "dep_" + "a" * 60, "dep_trailing_", "-" * 80, "dep_a", "functions", "mkt_functions",
])
def test_other_ids_get_valid_hashed_account_ids(deployment_id: str) -> None:
    account = account_id_for(deployment_id)
    assert _ACCOUNT_ID_RULE.fullmatch(account), account  # IAM: 6-30 characters
    assert account == account_id_for(deployment_id)
    assert re.search(r"-[0-9a-f]{8}$", account)


def test_ids_that_sanitize_alike_get_distinct_account_ids() -> None:
    assert len({account_id_for(i) for i in ("dep.x", "dep/x", "DEP_X", "dep-x", "dep x")}) == 5


def test_an_existing_account_is_kept_and_still_the_only_reader(fake: FakeGoogleApis,
                                                               provisioner: CloudRunProvisioner) -> None:
    script_secret(fake, account_exists=True)
    fake.on("POST", f"/v2/{LOCATION}/jobs", operation())

    provisioner.provision(make_spec())

    assert [c for c in fake.calls() if c[1] in (ACCOUNTS, SET_POLICY)] == [("POST", ACCOUNTS, {}),
                                                                          ("POST", SET_POLICY, {})]
    assert [r.json() for r in fake.requests if r.path == SET_POLICY] == [{"policy": ONLY_THE_ACCOUNT}]
    assert fake.requests[-1].json()["template"]["template"]["serviceAccount"] == SERVICE_ACCOUNT


def test_an_account_not_yet_visible_to_secret_manager_is_retried(fake: FakeGoogleApis) -> None:
    provisioner = make_provisioner(fake, grant_retry_delays=(0.0, 0.0))
    script_secret(fake)
    fake.on("POST", SET_POLICY,
            error(400, "INVALID_ARGUMENT", f"Service account {SERVICE_ACCOUNT} does not exist."),
            (200, ONLY_THE_ACCOUNT))
    fake.on("POST", f"/v2/{LOCATION}/jobs", operation())

    provisioner.provision(make_spec())

    assert [c[1] for c in fake.calls()].count(SET_POLICY) == 2
    assert fake.calls()[-1] == ("POST", f"/v2/{LOCATION}/jobs", {"jobId": JOB_NAME})


def test_the_grant_retries_are_bounded(fake: FakeGoogleApis) -> None:
    provisioner = make_provisioner(fake, grant_retry_delays=(0.0,))
    script_secret(fake)
    fake.on("POST", SET_POLICY, error(400, "INVALID_ARGUMENT", "Service account does not exist."))

    with pytest.raises(google_errors.BadRequest):
        provisioner.provision(make_spec())
    assert [c[1] for c in fake.calls()].count(SET_POLICY) == 2
    assert not [c for c in fake.calls() if c[1].startswith("/v2/")]  # no job without its grant


def test_an_iam_error_propagates_and_no_job_is_created(fake: FakeGoogleApis,
                                                       provisioner: CloudRunProvisioner) -> None:
    script_secret(fake)
    fake.on("POST", ACCOUNTS, error(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.create' denied."))

    with pytest.raises(google_errors.Forbidden, match=r"iam\.serviceAccounts\.create"):
        provisioner.provision(make_spec())
    assert [c[1] for c in fake.calls()][-1] == ACCOUNTS


def test_deprovision_keeps_the_account_while_the_secret_could_not_be_deleted(
        fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    fake.on("DELETE", f"/v2/{JOB}", operation())
    fake.on("DELETE", f"/v1/{SECRET}", error(403, "PERMISSION_DENIED", "denied"))

    with pytest.raises(google_errors.Forbidden):
        provisioner.deprovision(DEPLOYMENT)
    assert fake.calls() == [("DELETE", f"/v2/{JOB}", {}), ("DELETE", f"/v1/{SECRET}", {})]


def test_a_failed_account_deletion_propagates(fake: FakeGoogleApis, provisioner: CloudRunProvisioner) -> None:
    fake.on("DELETE", f"/v2/{JOB}", operation())
    fake.on("DELETE", f"/v1/{SECRET}", (200, {}))
    fake.on("DELETE", ACCOUNT, error(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.delete' denied."))

    with pytest.raises(google_errors.Forbidden):
        provisioner.deprovision(DEPLOYMENT)
