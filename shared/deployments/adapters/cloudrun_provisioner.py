"""The gcp mode's provisioner: a SaaS data plane is a Cloud Run job, its credential a secret.

``provision`` first stores the deployment's data-plane API key as a new version of the Secret
Manager secret ``dataplane-<deployment id>`` (created on first use, automatic replication),
then creates the deployment's own service account (IAM, ``projects.serviceAccounts.create``;
an existing one is kept), sets the secret's IAM policy to exactly one binding: that account
as ``roles/secretmanager.secretAccessor``, and creates the Cloud Run v2 job of the deployment
running as that account, or updates the job when it already exists. So each deployment's
code can read its own key and no other deployment's. The job's container reads the key
through a secret reference (``latest`` version): the clear key never appears in the job, in
Cloud Run's API, nor in a log line. Older versions of the secret are destroyed once the new
one is stored, so a replaced key does not linger. ``deprovision`` deletes the job, the secret
and the account.

The IAM Admin API is called over REST through google-auth's ``AuthorizedSession``: the
``google-cloud-iam`` client library (``iam_admin_v1``) only has a gRPC transport, and three
plain JSON calls do not justify a second transport stack.

The job is not run here: executions are started per delivery by the task queue's push
target, and each one connects out to the control plane and claims its work.

Names are derived deterministically from the deployment id:

* job: the platform's ids (``dep_`` + lowercase base32) map to ``dep-…`` (``_`` becomes
  ``-``), which is one-to-one on them. Any other id is lowercased, every run of characters
  Cloud Run does not allow becomes one ``-``, a ``d-`` prefix is added when it does not start
  with a letter, and it is cut to 40 characters and suffixed with ``-`` + the first 8 hex
  digits of the id's SHA-256, so ids that sanitize alike still get distinct names (≤ 49).
* secret: ``dataplane-<id>`` when that is a valid secret id (``[A-Za-z0-9_-]{1,255}``),
  otherwise the same replace-then-hash scheme.
* service account: the platform's ids (``dep_`` + 26 lowercase base32 characters, 30 in all)
  map to ``dep-…``, one-to-one. Any other id is lowercased, every run of characters IAM does
  not allow becomes one ``-``, a ``d-`` prefix is added when it does not start with a letter,
  and it is cut to 21 characters and suffixed with ``-`` + the first 8 hex digits of the id's
  SHA-256 (6-30 characters, ``[a-z][-a-z0-9]*[a-z0-9]``, as IAM requires).
* labels: lowercased, other characters replaced by ``_``, cut to 63 characters
  (informational only, so a lossy mapping is fine).

The Google clients are imported and created lazily, on first use, so building the container
(done at every function's cold start) costs nothing in either mode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from typing import Any

from shared.deployments.ports import DataPlaneSpec

_log = logging.getLogger(__name__)

JOB_NAME_MAX = 49
ACCOUNT_ID_MAX = 30
SECRET_ID_MAX = 255
LABEL_MAX = 63
# What a job task runs: one delivery of the queue, then exit (``jobs/agent_run.py``), not the image's
# ENTRYPOINT (the BYOC runner, which serves until stopped).
JOB_COMMAND = ("python", "-m", "jobs.agent_run")

_PLATFORM_ID = re.compile(r"[a-z][a-z0-9_]*[a-z0-9]")
_JOB_UNSAFE = re.compile(r"[^a-z0-9]+")
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]+")
_SECRET_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_LABEL_UNSAFE = re.compile(r"[^a-z0-9_-]")
_PLATFORM_DEPLOYMENT_ID = re.compile(r"dep_[a-z0-9]{1,26}")

SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"  # noqa: S105 - a role name
IAM_ENDPOINT = "https://iam.googleapis.com"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def job_name_for(deployment_id: str) -> str:
    """The Cloud Run job id of a deployment (lowercase letters, digits, ``-``; ≤ 49; starts with a letter)."""
    if _PLATFORM_ID.fullmatch(deployment_id) and len(deployment_id) <= JOB_NAME_MAX:
        return deployment_id.replace("_", "-")
    base = _JOB_UNSAFE.sub("-", deployment_id.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"d-{base}"
    base = base[: JOB_NAME_MAX - 9].rstrip("-")
    return f"{base}-{_digest(deployment_id)}"


def account_id_for(deployment_id: str) -> str:
    """The IAM service account id of a deployment (6-30 characters, ``[a-z][-a-z0-9]*[a-z0-9]``)."""
    if _PLATFORM_DEPLOYMENT_ID.fullmatch(deployment_id) and len(deployment_id) >= 6:
        return deployment_id.replace("_", "-")
    base = _JOB_UNSAFE.sub("-", deployment_id.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"d-{base}"
    base = base[: ACCOUNT_ID_MAX - 9].rstrip("-")
    return f"{base}-{_digest(deployment_id)}"


def secret_id_for(deployment_id: str) -> str:
    """The Secret Manager secret id holding a deployment's data-plane key."""
    wanted = f"dataplane-{deployment_id}"
    if _SECRET_ID.fullmatch(wanted) and len(wanted) <= SECRET_ID_MAX:
        return wanted
    base = _SECRET_UNSAFE.sub("-", wanted)[: SECRET_ID_MAX - 9]
    return f"{base}-{_digest(deployment_id)}"


def label_value(value: str) -> str:
    """``value`` as a Google Cloud label value (lowercase letters, digits, ``_``, ``-``; ≤ 63)."""
    return _LABEL_UNSAFE.sub("_", value.lower())[:LABEL_MAX]


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: Secret Manager checks it to reject a corrupted payload."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _version_number(version_name: str) -> int:
    """``projects/P/secrets/S/versions/7`` → 7 (0 when not numeric)."""
    tail = version_name.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class CloudRunProvisioner:
    """``Provisioner`` for gcp mode: per deployment, one Cloud Run v2 job, one Secret Manager
    secret and one IAM service account, the only identity allowed to read that secret.

    ``project``/``region`` locate the jobs (``projects/{project}/locations/{region}``), the
    secrets and the accounts (``projects/{project}``). ``default_image`` runs when the agent's
    manifest names no image. ``jobs_client`` (a ``run_v2.JobsClient``), ``secrets_client`` (a
    ``secretmanager_v1.SecretManagerServiceClient``) and ``iam_session`` (a google-auth
    ``AuthorizedSession``, for the IAM REST API at ``iam_endpoint``) are created with the
    default credentials when not given. ``max_retries`` is the job task's retry count: the
    task queue's leases already redeliver a run whose worker died, so one quick retry only
    covers a container that failed to start. ``operation_timeout`` bounds each wait for a
    long-running Cloud Run operation (``concurrent.futures.TimeoutError`` past it) and each
    IAM call. ``grant_retry_delays`` are the waits before re-setting the secret's policy when
    Secret Manager does not know a just-created account yet (IAM is eventually consistent).
    """

    def __init__(self, project: str, region: str, *, default_image: str,
                 jobs_client: Any | None = None, secrets_client: Any | None = None,
                 iam_session: Any | None = None, iam_endpoint: str = IAM_ENDPOINT,
                 max_retries: int = 1, operation_timeout: float = 300.0,
                 grant_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)) -> None:
        self.project = project
        self.region = region
        self.default_image = default_image
        self.max_retries = max_retries
        self.operation_timeout = operation_timeout
        self.iam_endpoint = iam_endpoint.rstrip("/")
        self.grant_retry_delays = grant_retry_delays
        self._jobs_client = jobs_client
        self._secrets_client = secrets_client
        self._iam_session = iam_session
        self._owns_jobs_client = jobs_client is None
        self._owns_secrets_client = secrets_client is None
        self._owns_iam_session = iam_session is None
        self._lock = threading.Lock()

    # -- names -------------------------------------------------------------------------------
    @property
    def location(self) -> str:
        """``projects/{project}/locations/{region}``: the parent of the jobs."""
        return f"projects/{self.project}/locations/{self.region}"

    def job_path(self, deployment_id: str) -> str:
        """The full resource name of a deployment's job."""
        return f"{self.location}/jobs/{job_name_for(deployment_id)}"

    def secret_path(self, deployment_id: str) -> str:
        """The full resource name of a deployment's key secret."""
        return f"projects/{self.project}/secrets/{secret_id_for(deployment_id)}"

    def account_email(self, deployment_id: str) -> str:
        """The email of a deployment's service account."""
        return f"{account_id_for(deployment_id)}@{self.project}.iam.gserviceaccount.com"

    def account_path(self, deployment_id: str) -> str:
        """The IAM resource name of a deployment's service account."""
        return f"projects/{self.project}/serviceAccounts/{self.account_email(deployment_id)}"

    # -- clients -----------------------------------------------------------------------------
    def jobs_client(self) -> Any:
        """The Cloud Run ``JobsClient``, created on first use."""
        with self._lock:
            if self._jobs_client is None:
                from google.cloud import run_v2  # noqa: PLC0415 - heavy, gcp mode only

                self._jobs_client = run_v2.JobsClient()
            return self._jobs_client

    def secrets_client(self) -> Any:
        """The Secret Manager client, created on first use."""
        with self._lock:
            if self._secrets_client is None:
                from google.cloud import secretmanager_v1  # noqa: PLC0415 - heavy, gcp mode only

                self._secrets_client = secretmanager_v1.SecretManagerServiceClient()
            return self._secrets_client

    def iam_session(self) -> Any:
        """The authorized HTTP session for the IAM REST API, created on first use."""
        with self._lock:
            if self._iam_session is None:
                import google.auth  # noqa: PLC0415 - gcp mode only
                from google.auth.transport.requests import AuthorizedSession  # noqa: PLC0415

                credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
                self._iam_session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
            return self._iam_session

    # -- Provisioner -------------------------------------------------------------------------
    def provision(self, spec: DataPlaneSpec) -> None:
        """Store the key in Secret Manager, create the deployment's service account, let it (and
        only it) read the key, then create or update the deployment's Cloud Run job."""
        self._store_key(spec)
        email = self._ensure_account(spec.deployment_id)
        self._grant_key(spec.deployment_id, email)
        self._put_job(spec, email)
        _log.info("data plane of deployment %s provisioned as Cloud Run job %s",
                  spec.deployment_id, self.job_path(spec.deployment_id))

    def deprovision(self, deployment_id: str) -> None:
        """Delete the job, then the secret, then the service account; any one already gone is fine."""
        from google.api_core import exceptions as google_errors  # noqa: PLC0415

        job = self.job_path(deployment_id)
        try:
            self.jobs_client().delete_job(name=job).result(timeout=self.operation_timeout)
        except google_errors.NotFound:
            _log.info("Cloud Run job %s already deleted", job)
        secret = self.secret_path(deployment_id)
        try:
            self.secrets_client().delete_secret(name=secret)
        except google_errors.NotFound:
            _log.info("secret %s already deleted", secret)
        self._delete_account(deployment_id)
        _log.info("data plane of deployment %s deprovisioned", deployment_id)

    # -- IAM ---------------------------------------------------------------------------------
    def _iam(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One IAM REST call; returns the ``requests.Response`` whatever its status."""
        return self.iam_session().request(method, f"{self.iam_endpoint}/v1/{path}", json=body,
                                          timeout=self.operation_timeout)

    def _ensure_account(self, deployment_id: str) -> str:
        """Create the deployment's service account (kept when it exists: 409); returns its email."""
        from google.api_core import exceptions as google_errors  # noqa: PLC0415

        account_id = account_id_for(deployment_id)
        response = self._iam("POST", f"projects/{self.project}/serviceAccounts", {
            "accountId": account_id,
            "serviceAccount": {
                "displayName": f"Data plane {account_id}",
                "description": f"Agent Marketplace data plane of deployment {deployment_id}"[:256],
            },
        })
        if response.status_code == 409:
            _log.info("service account %s exists; keeping it", account_id)
            return self.account_email(deployment_id)
        if response.status_code >= 400:
            raise google_errors.from_http_response(response)  # type: ignore[no-untyped-call]
        return str(response.json().get("email") or self.account_email(deployment_id))

    def _delete_account(self, deployment_id: str) -> None:
        from google.api_core import exceptions as google_errors  # noqa: PLC0415

        path = self.account_path(deployment_id)
        response = self._iam("DELETE", path)
        if response.status_code == 404:
            _log.info("service account %s already deleted", path)
        elif response.status_code >= 400:
            raise google_errors.from_http_response(response)  # type: ignore[no-untyped-call]

    # -- Secret Manager ----------------------------------------------------------------------
    def _grant_key(self, deployment_id: str, email: str) -> None:
        """Set the secret's policy to exactly one binding: ``email`` may read it.

        The whole policy is replaced, so no other member keeps or gains access. A just-created
        account may be unknown to Secret Manager for a few seconds (400); that is retried.
        """
        from google.api_core import exceptions as google_errors  # noqa: PLC0415

        policy = {"bindings": [{"role": SECRET_ACCESSOR, "members": [f"serviceAccount:{email}"]}]}
        request = {"resource": self.secret_path(deployment_id), "policy": policy}
        for delay in (*self.grant_retry_delays, None):
            try:
                self.secrets_client().set_iam_policy(request=request)
                return
            except google_errors.BadRequest:
                if delay is None:
                    raise
                _log.info("service account %s not visible yet; retrying in %ss", email, delay)
                time.sleep(delay)

    # -- JobLauncher -------------------------------------------------------------------------
    def start_execution(self, deployment_id: str) -> str:
        """Start one execution of the deployment's job (``jobs.run``) without waiting for it;
        returns the long-running operation's name. The execution leases its task itself."""
        operation = self.jobs_client().run_job(name=self.job_path(deployment_id))
        name = str(operation.operation.name)
        _log.info("started an execution of job %s (%s)", job_name_for(deployment_id), name)
        return name

    def _labels(self, spec: DataPlaneSpec) -> dict[str, str]:
        return {"marketplace-deployment": label_value(spec.deployment_id),
                "marketplace-org": label_value(spec.org_id)}

    def _store_key(self, spec: DataPlaneSpec) -> None:
        from google.api_core import exceptions as google_errors  # noqa: PLC0415
        from google.cloud import secretmanager_v1 as sm  # noqa: PLC0415

        client = self.secrets_client()
        name = self.secret_path(spec.deployment_id)
        secret = sm.Secret(replication=sm.Replication(automatic=sm.Replication.Automatic()),
                           labels=self._labels(spec))
        try:
            client.create_secret(parent=f"projects/{self.project}", secret_id=secret_id_for(spec.deployment_id),
                                 secret=secret)
        except google_errors.Conflict:
            # ALREADY_EXISTS (REST reports any 409 as Conflict): a re-provision keeps its secret.
            _log.info("secret %s exists; adding a version", name)
        data = spec.api_key.encode()
        added = client.add_secret_version(parent=name,
                                          payload=sm.SecretPayload(data=data, data_crc32c=crc32c(data)))
        self._destroy_older_versions(name, added.name)

    def _destroy_older_versions(self, secret: str, current: str) -> None:
        """Destroy the enabled versions older than ``current``: the job only reads ``latest``.

        Newer ones are left alone (a concurrent provision may have added one). A failure here
        leaves an old key stored but changes nothing for the data plane, so it is only logged.
        """
        from google.api_core import exceptions as google_errors  # noqa: PLC0415

        client = self.secrets_client()
        newest = _version_number(current)
        try:
            for version in client.list_secret_versions(request={"parent": secret, "filter": "state:ENABLED"}):
                if _version_number(version.name) < newest:
                    client.destroy_secret_version(name=version.name)
        except google_errors.GoogleAPICallError as exc:
            _log.warning("could not destroy the older versions of secret %s: %s", secret, exc.message)

    # -- Cloud Run ---------------------------------------------------------------------------
    def _job(self, spec: DataPlaneSpec, service_account: str) -> Any:
        """The job resource for ``spec``, run as ``service_account`` (without its name; the update sets it)."""
        from google.cloud import run_v2  # noqa: PLC0415
        from google.protobuf import duration_pb2  # noqa: PLC0415

        env = [
            run_v2.EnvVar(name="MARKETPLACE_CONTROL_PLANE_URL", value=spec.control_plane_url),
            run_v2.EnvVar(name="MARKETPLACE_DEPLOYMENT_ID", value=spec.deployment_id),
            run_v2.EnvVar(name="MARKETPLACE_AGENT", value=f"{spec.agent_name}@{spec.agent_version}"),
            run_v2.EnvVar(name="MARKETPLACE_AGENT_CONFIG",
                          value=json.dumps(spec.config, sort_keys=True, separators=(",", ":"))),
            run_v2.EnvVar(name="MARKETPLACE_DATAPLANE_KEY", value_source=run_v2.EnvVarSource(
                secret_key_ref=run_v2.SecretKeySelector(secret=self.secret_path(spec.deployment_id),
                                                        version="latest"))),
        ]
        container = run_v2.Container(
            name="data-plane",
            image=spec.image or self.default_image,
            command=list(JOB_COMMAND),
            env=env,
            resources=run_v2.ResourceRequirements(limits={"cpu": spec.cpu, "memory": spec.memory}),
        )
        labels = self._labels(spec)
        return run_v2.Job(
            labels=labels,
            template=run_v2.ExecutionTemplate(
                labels=labels,
                task_count=1,
                parallelism=1,
                template=run_v2.TaskTemplate(
                    containers=[container],
                    timeout=duration_pb2.Duration(seconds=spec.timeout_seconds),
                    max_retries=self.max_retries,
                    service_account=service_account,
                ),
            ),
        )

    def _put_job(self, spec: DataPlaneSpec, service_account: str) -> None:
        from google.api_core import exceptions as google_errors  # noqa: PLC0415

        client = self.jobs_client()
        job = self._job(spec, service_account)
        try:
            operation = client.create_job(parent=self.location, job=job, job_id=job_name_for(spec.deployment_id))
        except google_errors.Conflict:
            # The job exists (a re-provision, or a retried install): replace its template.
            # ``allow_missing`` turns a deletion racing this update into a create.
            job.name = self.job_path(spec.deployment_id)
            operation = client.update_job(request={"job": job, "allow_missing": True})
        operation.result(timeout=self.operation_timeout)

    def close(self) -> None:
        """Close the transports of the clients this provisioner created."""
        with self._lock:
            owned = [c for c, own in ((self._jobs_client, self._owns_jobs_client),
                                      (self._secrets_client, self._owns_secrets_client)) if own and c is not None]
            if self._owns_jobs_client:
                self._jobs_client = None
            if self._owns_secrets_client:
                self._secrets_client = None
            session = self._iam_session if self._owns_iam_session else None
            if self._owns_iam_session:
                self._iam_session = None
        for client in owned:
            client.transport.close()
        if session is not None:
            session.close()
