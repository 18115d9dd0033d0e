"""Platform settings, read once by the composition root (never at import time)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where local mode keeps its database and keys when no directory is given.

    As root, PostgreSQL must run as an unprivileged service user that can traverse every
    parent of the data directory; ``/root`` is private, so root defaults to ``/var/lib``
    instead of changing the permissions of anyone's home.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/marketplace")
    return Path(platformdirs.user_data_dir("marketplace", appauthor=False))


class Settings(BaseSettings):
    """Everything the platform reads from its environment (prefix ``MARKETPLACE_``)."""

    model_config = SettingsConfigDict(env_prefix="MARKETPLACE_", extra="ignore")

    mode: Literal["local", "gcp"] = "local"
    data_dir: Path = Field(default_factory=default_data_dir)
    # Set in gcp mode (or to point local mode at an external server): a libpq-style URL.
    database_url: SecretStr | None = None
    # gcp mode: Cloud SQL instance connection name "project:region:instance".
    cloudsql_instance: str | None = None
    db_user: str = "postgres"
    db_name: str = "marketplace"
    db_password: SecretStr | None = None
    db_pool_size: int = Field(default=16, ge=1, le=200)

    public_url: str = "http://127.0.0.1:8080"
    token_issuer: str = "marketplace-local"  # noqa: S105 - an issuer name, not a secret
    token_audience: str = "marketplace-api"  # noqa: S105 - an audience name, not a secret
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86400)
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=60)
    # gcp mode: the OIDC issuer whose JWKS verifies access tokens.
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None

    # gcp mode: where SaaS data planes run.
    gcp_project: str | None = None
    gcp_region: str = "us-central1"
    runner_image: str = "us-docker.pkg.dev/agent-marketplace/runner/data-plane:latest"
    # gcp mode (required there): the Cloud Storage bucket holding agent packages (issue 14;
    # terraform/storage.tf). Local mode keeps them under the data dir (``artifacts_dir``).
    packages_bucket: str | None = None

    # gcp mode: push each run's delivery through Cloud Tasks to the dispatch function, which
    # starts the deployment's Cloud Run job. Unset: SaaS runs wait for a polling worker.
    runs_queue: str | None = None  # the Cloud Tasks queue: projects/P/locations/L/queues/Q
    dispatch_url: str | None = None  # the dispatch function's URL (also the OIDC audience)
    tasks_invoker: str | None = None  # the service account Cloud Tasks signs pushes as
    # gcp mode: Cloud Scheduler triggers the periodic jobs through run_scheduled_job at this
    # URL (the tokens' audience), signing as this service account.
    scheduled_url: str | None = None
    scheduler_invoker: str | None = None
    tasks_emulator_host: str | None = None  # host:port of a Cloud Tasks emulator (tests)
    push_token_issuer: str = "https://accounts.google.com"  # noqa: S105 - an issuer, not a secret
    push_token_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"  # noqa: S105 - a public URL

    # Webhook receivers on loopback addresses (http or https): local development and tests only,
    # never in production. Every other private or reserved address is refused regardless.
    webhooks_allow_loopback: bool = False
    # Secrets at rest are sealed with per-org data keys wrapped by a key-encryption key: in gcp
    # mode this Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K, required), locally
    # key files in the data directory's keys/ folder (created on first start).
    kms_key: str | None = None
    # How long an unwrapped data key (and which version is an org's newest) is kept in memory:
    # also how long other processes keep sealing with the previous key after a rotation.
    data_key_cache_seconds: float = Field(default=300.0, ge=0, le=3600)
    # A secret read (a webhook secret opened to sign) is audited at most once per secret per
    # this many seconds per server process; the entry counts the reads since the previous one.
    secret_read_audit_seconds: float = Field(default=3600.0, ge=0)
    # The platform key ring used before the per-org data keys (comma-separated base64 of 32
    # bytes): set it only to keep opening secrets sealed with it until they are re-sealed.
    # Local mode finds its old ring (secretbox-*.key) in keys/ by itself.
    secret_box_keys: SecretStr | None = None

    # Rate limits (shared/identity/rate_limits.py): requests per fixed window, shared by every
    # server process; 0 turns one off. Users and org API keys; data-plane keys (they long-poll,
    # heartbeat and stream logs); and calls without a credential that verifies, per client address.
    rate_limit_window_seconds: int = Field(default=60, ge=1, le=3600)
    rate_limit_principal: int = Field(default=30_000, ge=0)
    rate_limit_dataplane: int = Field(default=120_000, ge=0)
    rate_limit_anonymous: int = Field(default=1_200, ge=0)
    # Hits a process counts in memory before writing them (far from a limit): a window admits at
    # most limit + (processes - 1) * (batch - 1) requests.
    rate_limit_batch: int = Field(default=32, ge=1, le=10_000)
    # The client address of an anonymous call: 0 is the connection's peer (local mode: granian
    # faces the caller); N is the N-th address from the right of X-Forwarded-For, behind N
    # trusted proxies (gcp: API Gateway and Google's front end append what they saw).
    client_address_hops: int = Field(default=0, ge=0, le=10)

    # billing (issue 16): Stripe. Without a secret key invoices stay drafts (local mode).
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None  # a Stripe-compatible server instead of api.stripe.com (the tests)
    # An org whose invoice payment failed is warned at once and frozen after this many days unpaid.
    billing_payment_grace_days: int = Field(default=7, ge=0, le=90)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    idempotency_ttl_seconds: int = 24 * 3600
    log_level: str = "INFO"

    # -- approvals and notifications (issue 15) --
    # Email notifications over SMTP: none are sent without a host.
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "marketplace@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Slack's Web API (users.info maps the user of a Slack action to a member by email).
    slack_api_url: str = "https://slack.com/api"
    # Slack incoming webhooks on loopback addresses: local development and tests only.
    slack_allow_loopback: bool = False
    # The local cloud-resources adapter (a table) or Compute Engine for remediations.
    cloud_resources: Literal["local", "gce"] = "local"
    # -- memory (issue 17) --
    # gcp mode: the Firestore database holding memory Levels 2-4 (terraform sets it).
    firestore_database: str = "(default)"
    # gcp mode: Level 3's vectors in Vertex AI Vector Search (unset: Level 3 stays in Firestore).
    # The index and its endpoint as resource names, the deployed index's id, and the endpoint's
    # public domain (publicEndpointDomainName), which answers find_neighbors.
    memory_vector_index: str | None = None
    memory_vector_endpoint: str | None = None
    memory_vector_deployed_index: str | None = None
    memory_vector_api_endpoint: str | None = None

    @property
    def pg_dir(self) -> Path:
        """The PostgreSQL cluster directory inside the data dir."""
        return self.data_dir / "pg"

    @property
    def dataplanes_dir(self) -> Path:
        """Local mode: the deployments the local worker pool serves (one credential file each)."""
        return self.data_dir / "dataplanes"

    @property
    def artifacts_dir(self) -> Path:
        """Local mode: agent packages, content-addressed (``sha256/ab/<hex>``)."""
        return self.data_dir / "artifacts"

    @property
    def keys_dir(self) -> Path:
        """Where local mode keeps its keys: the token issuer's signing keys, the key-encryption keys."""
        return self.data_dir / "keys"
