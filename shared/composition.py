"""The composition root: the only module that picks adapters, from ``Settings``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.approvals import ApprovalService, CloudResources
from shared.audit import AuditLog
from shared.billing import BillingService, Invoicing, PaymentProvider, Payouts
from shared.catalog import ArtifactStore, CatalogService
from shared.deployments import DeploymentService, Provisioner
from shared.identity import (
    IdempotencyStore,
    IdentityService,
    OrgService,
    PushAuth,
    RateLimiter,
    TokenIssuer,
    TokenVerifier,
    Users,
)
from shared.kernel.db.database import Connect, Database, Tx, connect_url
from shared.kernel.db.migrate import apply_migrations
from shared.kernel.secret_box import SecretBox
from shared.kernel.settings import Settings
from shared.memory import Embedder, MemoryService, MemoryStore  # memory (issue 17)
from shared.memory.adapters.minilm_embedder import MiniLmEmbedder
from shared.memory.adapters.pgvector_store import PgVectorStore
from shared.notifications import EmailSender, NotificationService
from shared.runs import DispatchService, RunEvent, RunService, TaskQueue
from shared.secrets import KeyEncryptionKey, SecretKeys
from shared.webhooks import DestinationPolicy, SystemResolver, WebhookService

# The built-in agents: agent packages of their own (agents/<name>/manifest.yaml beside the package),
# published from the source tree the platform runs from.
BUILTIN_AGENTS_DIR = Path(__file__).resolve().parents[1] / "agents"


@dataclass
class Container:
    """Every service the operations use, built once per process."""

    settings: Settings
    db: Database
    audit: AuditLog
    users: Users
    identity: IdentityService
    orgs: OrgService
    idempotency: IdempotencyStore
    rate_limits: RateLimiter
    issuer: TokenIssuer | None
    catalog: CatalogService
    deployments: DeploymentService
    queue: TaskQueue
    runs: RunService
    webhooks: WebhookService
    secrets: SecretKeys
    billing: BillingService  # billing (issue 16)
    invoicing: Invoicing  # billing (issue 16)
    payouts: Payouts  # billing (issue 16)
    approvals: ApprovalService  # issue 15
    notifications: NotificationService  # issue 15
    memory: MemoryService  # issue 17
    dispatch: DispatchService | None = None
    # gcp mode: who may trigger the periodic jobs (Cloud Scheduler's account).
    scheduler_auth: PushAuth | None = None
    # A push-delivering queue (Cloud Tasks) re-pushes its due redeliveries on a schedule; a
    # pulled queue has nothing to relay (None).
    queue_relay: Callable[[], int] | None = None

    def close(self) -> None:
        """Stop the queue's listener and release the database connections."""
        self.queue.close()
        self.db.close()


def _local_connection_factory(settings: Settings) -> Connect:
    from shared.kernel.adapters.embedded_pg import EmbeddedPostgres  # noqa: PLC0415

    if settings.database_url is not None:
        return connect_url(settings.database_url.get_secret_value())
    server = EmbeddedPostgres(settings.data_dir).ensure_running()
    server.ensure_database(settings.db_name)
    return connect_url(server.url(settings.db_name))


def _cloudsql_connection_factory(settings: Settings) -> Connect:
    # Imported lazily: the connector pulls in google-auth and aiohttp, too heavy for a cold start
    # that does not need them. It speaks psycopg since 1.22.
    from google.cloud.sql.connector import Connector, IPTypes  # noqa: PLC0415

    connector = Connector(ip_type=IPTypes.PRIVATE, refresh_strategy="lazy")
    instance = settings.cloudsql_instance or ""
    password = settings.db_password.get_secret_value() if settings.db_password else None

    def connect() -> Any:
        return connector.connect(instance, "psycopg", user=settings.db_user,
                                 password=password, db=settings.db_name, autocommit=True,
                                 application_name="marketplace", enable_iam_auth=password is None)
    return connect


def connection_factory(settings: Settings) -> Connect:
    """The database for the configured mode."""
    if settings.mode == "gcp":
        if settings.cloudsql_instance:
            return _cloudsql_connection_factory(settings)
        if settings.database_url is None:
            raise RuntimeError("gcp mode needs MARKETPLACE_CLOUDSQL_INSTANCE or MARKETPLACE_DATABASE_URL")
        return connect_url(settings.database_url.get_secret_value())
    return _local_connection_factory(settings)


def _token_ports(settings: Settings) -> tuple[TokenVerifier, TokenIssuer | None]:
    if settings.mode == "local":
        from shared.identity.adapters.local_issuer import LocalIssuer  # noqa: PLC0415

        issuer = LocalIssuer(settings.keys_dir, issuer=settings.token_issuer, audience=settings.token_audience)
        return issuer, issuer
    from shared.identity.adapters.oidc_verifier import OidcVerifier  # noqa: PLC0415

    if not settings.oidc_issuer:
        raise RuntimeError("gcp mode needs MARKETPLACE_OIDC_ISSUER")
    return OidcVerifier(issuer=settings.oidc_issuer, audience=settings.token_audience,
                        jwks_url=settings.oidc_jwks_url), None


def _provisioner(settings: Settings) -> Provisioner:
    if settings.mode == "local":
        from shared.deployments.adapters.local_provisioner import LocalProvisioner  # noqa: PLC0415

        return LocalProvisioner(settings.dataplanes_dir)
    from shared.deployments.adapters.cloudrun_provisioner import CloudRunProvisioner  # noqa: PLC0415

    if not settings.gcp_project:
        raise RuntimeError("gcp mode needs MARKETPLACE_GCP_PROJECT")
    # Each deployment's job runs as a service account of its own, created at provision.
    return CloudRunProvisioner(settings.gcp_project, settings.gcp_region, default_image=settings.runner_image)


def _artifact_store(settings: Settings) -> ArtifactStore:
    """Agent packages (issue 14): files under the data dir locally, a Cloud Storage bucket in gcp."""
    if settings.mode == "gcp":
        if not settings.packages_bucket:
            raise RuntimeError("gcp mode needs MARKETPLACE_PACKAGES_BUCKET (the bucket of agent packages)")
        from shared.catalog.adapters.gcs_artifacts import GcsArtifactStore  # noqa: PLC0415 - gcp only

        return GcsArtifactStore(settings.packages_bucket, project=settings.gcp_project)
    from shared.catalog.adapters.file_artifacts import FileArtifactStore  # noqa: PLC0415

    return FileArtifactStore(settings.artifacts_dir)


def _task_queue(settings: Settings, db: Database, connect: Connect) -> tuple[TaskQueue, Callable[[], int] | None]:
    # PostgreSQL holds the queue's state in both modes and data planes pull from it over HTTP
    # (GET /tasks/next). In gcp mode with a Cloud Tasks queue configured, CloudTasksQueue wraps
    # it to push each delivery to the dispatch function, which starts a Cloud Run job; its relay
    # (re-pushing due redeliveries) is the second item, None for the pulled queue.
    from shared.runs.adapters.pg_task_queue import PgTaskQueue  # noqa: PLC0415

    # Its own connection for LISTEN, so the wake-up listener never holds one of the pool's.
    state = PgTaskQueue(db, listen_connect=connect)
    if settings.mode != "gcp" or not settings.runs_queue:
        return state, None
    if not settings.dispatch_url or not settings.tasks_invoker:
        raise RuntimeError("MARKETPLACE_RUNS_QUEUE needs MARKETPLACE_DISPATCH_URL and "
                           "MARKETPLACE_TASKS_INVOKER")
    from shared.runs import TASK_KIND  # noqa: PLC0415
    from shared.runs.adapters.cloud_tasks_queue import CloudTasksQueue  # noqa: PLC0415

    pushed = CloudTasksQueue(state, queue_path=settings.runs_queue, target_url=settings.dispatch_url,
                             service_account_email=settings.tasks_invoker,
                             push_kinds=frozenset({TASK_KIND}), emulator_host=settings.tasks_emulator_host)
    return pushed, pushed.relay


def _dispatch(settings: Settings, db: Database, deployments: DeploymentService, provisioner: Provisioner
              ) -> DispatchService | None:
    if settings.mode != "gcp" or not settings.runs_queue or not settings.dispatch_url:
        return None
    from shared.deployments import JobLauncher  # noqa: PLC0415
    from shared.identity.adapters.oidc_verifier import OidcVerifier  # noqa: PLC0415

    if not isinstance(provisioner, JobLauncher):
        raise RuntimeError("the gcp provisioner cannot start job executions")
    verifier = OidcVerifier(issuer=settings.push_token_issuer, audience=settings.dispatch_url,
                            jwks_url=settings.push_token_jwks_url)
    return DispatchService(db, deployments, provisioner, PushAuth(verifier, settings.tasks_invoker or ""))


def _scheduler_auth(settings: Settings) -> PushAuth | None:
    if settings.mode != "gcp" or not settings.scheduled_url or not settings.scheduler_invoker:
        return None
    from shared.identity.adapters.oidc_verifier import OidcVerifier  # noqa: PLC0415

    verifier = OidcVerifier(issuer=settings.push_token_issuer, audience=settings.scheduled_url,
                            jwks_url=settings.push_token_jwks_url)
    return PushAuth(verifier, settings.scheduler_invoker)


def _kek(settings: Settings) -> KeyEncryptionKey:
    if settings.kms_key is not None:
        from shared.secrets.adapters.cloudkms_kek import CloudKmsKek  # noqa: PLC0415

        return CloudKmsKek(settings.kms_key)
    if settings.mode == "local":
        from shared.secrets.adapters.local_kek import LocalKek  # noqa: PLC0415

        return LocalKek(settings.keys_dir)
    raise RuntimeError("gcp mode needs MARKETPLACE_KMS_KEY (the Cloud KMS key that wraps the data keys)")


def _legacy_secret_box(settings: Settings) -> SecretBox | None:
    # The platform key ring that sealed secrets before the per-org data keys: it only opens what
    # it sealed then, until the background re-seal (and the 24 h replay expiry) leaves none.
    from shared.kernel.adapters.aesgcm_secret_box import AesGcmSecretBox  # noqa: PLC0415

    if settings.secret_box_keys is not None:
        return AesGcmSecretBox.from_encoded(settings.secret_box_keys.get_secret_value())
    if settings.mode == "local" and any(settings.keys_dir.glob("secretbox-*.key")):
        return AesGcmSecretBox.from_key_dir(settings.keys_dir)
    return None


def _payments(settings: Settings) -> PaymentProvider | None:
    """billing (issue 16): Stripe when a secret key is set; without one invoices stay drafts."""
    if settings.stripe_secret_key is None:
        return None
    from shared.billing.adapters.stripe_payments import StripePayments  # noqa: PLC0415

    secret = settings.stripe_webhook_secret
    return StripePayments(settings.stripe_secret_key.get_secret_value(),
                          webhook_secret=None if secret is None else secret.get_secret_value(),
                          api_base=settings.stripe_api_base)
def _cloud_resources(settings: Settings, db: Database) -> CloudResources:
    if settings.cloud_resources == "gce":
        from shared.approvals.adapters.gce_resources import ComputeEngineResources  # noqa: PLC0415
        if not settings.gcp_project:
            raise RuntimeError("MARKETPLACE_CLOUD_RESOURCES=gce needs MARKETPLACE_GCP_PROJECT")
        return ComputeEngineResources(settings.gcp_project)
    from shared.approvals.adapters.local_inventory import LocalInventory  # noqa: PLC0415
    return LocalInventory(db)


def _email(settings: Settings) -> EmailSender | None:
    if not settings.smtp_host:
        return None
    from shared.notifications.adapters.smtp_email import SmtpEmail  # noqa: PLC0415
    return SmtpEmail(settings.smtp_host, settings.smtp_port, sender=settings.smtp_from,
                     starttls=settings.smtp_starttls, username=settings.smtp_username,
                     password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                     timeout=settings.smtp_timeout_seconds)


def _notifications(settings: Settings, db: Database, audit: AuditLog, orgs: OrgService, *, secrets: SecretKeys,
                   approvals: ApprovalService) -> NotificationService:
    from shared.notifications.adapters.slack_directory import SlackWebDirectory  # noqa: PLC0415
    from shared.notifications.adapters.slack_webhook import SlackWebhookPoster  # noqa: PLC0415
    poster = SlackWebhookPoster(DestinationPolicy(SystemResolver(), allow_loopback=settings.slack_allow_loopback))
    return NotificationService(db, audit, orgs, secrets, approvals, email=_email(settings), slack_poster=poster,
                               directory=SlackWebDirectory(settings.slack_api_url))


def build_container(settings: Settings, *, migrate: bool = True) -> Container:
    """Wire every port and service for ``settings``."""
    connect = connection_factory(settings)
    db = Database(connect, size=settings.db_pool_size)
    if migrate:
        apply_migrations(db)
    verifier, issuer = _token_ports(settings)
    audit = AuditLog(db)
    users = Users(db)
    identity = IdentityService(db, users, audit, verifier, issuer, access_ttl=settings.access_token_ttl_seconds,
                               refresh_ttl=settings.refresh_token_ttl_seconds)
    orgs = OrgService(db, users, identity, audit)
    catalog = CatalogService(db, audit, orgs, builtin_agents_dir=BUILTIN_AGENTS_DIR,
                             artifacts=_artifact_store(settings))
    queue, queue_relay = _task_queue(settings, db, connect)
    provisioner = _provisioner(settings)
    secrets = SecretKeys(db, audit, _kek(settings), legacy=_legacy_secret_box(settings),
                         cache_seconds=settings.data_key_cache_seconds,
                         read_audit_seconds=settings.secret_read_audit_seconds)
    webhooks = WebhookService(db, audit, secrets,
                              DestinationPolicy(SystemResolver(), allow_loopback=settings.webhooks_allow_loopback))
    deployments = DeploymentService(db, audit, identity, catalog, provisioner, control_plane_url=settings.public_url)
    catalog.use_install_history(deployments)  # deployments sits above the catalog and is built with it
    billing = BillingService(db, audit, catalog, events=webhooks.emit)  # billing (issue 16)
    payments = _payments(settings)
    # -- approvals (issue 15): run events reach webhooks and cancel a finished run's pending approvals.
    later: list[tuple[ApprovalService, NotificationService]] = []

    def run_events(tx: Tx, event: RunEvent) -> object:
        answer = webhooks.emit(tx, org_id=event.org_id, event=event.type, data=event.payload())
        for approvals_of, notifications_of in later:
            approvals_of.cancel_for_run(tx, event)
            notifications_of.run_event(tx, event)
        return answer

    runs = RunService(db, audit, orgs, queue, catalog=catalog, deployments=deployments, events=run_events,
                      billing=billing)
    def cancel_runs(org_id: str, actor: str) -> object:
        return runs.cancel_all(org_id, actor=actor)

    billing.use_on_frozen(cancel_runs)  # the kill switch and an unpaid invoice's freeze stop the runs
    invoicing = Invoicing(db, audit, billing, payments, deployments=deployments, events=webhooks.emit,
                          grace_days=settings.billing_payment_grace_days, on_frozen=cancel_runs)
    approvals = ApprovalService(db, audit, orgs, runs, events=webhooks.emit, resources=_cloud_resources(settings, db))
    notifications = _notifications(settings, db, audit, orgs, secrets=secrets, approvals=approvals)
    approvals.use_notifier(notifications)
    billing.use_notifier(notifications.billing_event)  # billing (issue 16): budget alerts to the org's admins
    later.append((approvals, notifications))
    return Container(
        settings=settings, db=db, audit=audit, users=users, identity=identity,
        orgs=orgs,
        idempotency=IdempotencyStore(db, secrets, ttl_seconds=settings.idempotency_ttl_seconds),
        rate_limits=RateLimiter(db, window_seconds=settings.rate_limit_window_seconds, batch=settings.rate_limit_batch),
        issuer=issuer,
        catalog=catalog,
        deployments=deployments,
        queue=queue,
        runs=runs,
        webhooks=webhooks,
        secrets=secrets,
        approvals=approvals,
        notifications=notifications,
        dispatch=_dispatch(settings, db, deployments, provisioner),
        scheduler_auth=_scheduler_auth(settings),
        billing=billing,
        invoicing=invoicing,
        payouts=Payouts(db, audit, billing, payments),
        memory=_memory(settings, db, audit, orgs),
        queue_relay=queue_relay,
    )


# -- memory (issue 17) --
def _memory(settings: Settings, db: Database, audit: AuditLog, orgs: OrgService) -> MemoryService:
    """Local: Levels 2-4 in PostgreSQL + pgvector, the all-MiniLM-L6-v2 embedder. gcp: Firestore
    (Level 3's vectors in Vertex AI Vector Search when its index is configured) and Vertex AI
    embeddings (1536-d). Level 5 is the org's preferences either way."""
    store: MemoryStore
    embedder: Embedder
    if settings.mode == "gcp" and settings.gcp_project:
        from google.cloud import firestore  # noqa: PLC0415 - gcp only

        from shared.memory.adapters.firestore_store import FirestoreStore  # noqa: PLC0415 - gcp only
        from shared.memory.adapters.vertex_embedder import VertexEmbedder  # noqa: PLC0415 - gcp only

        project, database = settings.gcp_project, settings.firestore_database
        documents = FirestoreStore(lambda: firestore.Client(project=project, database=database))
        store = documents
        if settings.memory_vector_index and settings.memory_vector_endpoint and settings.memory_vector_deployed_index:
            from shared.memory.adapters.vertex_vector_store import (  # noqa: PLC0415 - gcp only
                VertexVectorSearchStore,
            )

            store = VertexVectorSearchStore(documents, index=settings.memory_vector_index,
                                            index_endpoint=settings.memory_vector_endpoint,
                                            deployed_index_id=settings.memory_vector_deployed_index,
                                            location=settings.gcp_region,
                                            match_api_endpoint=settings.memory_vector_api_endpoint)
        embedder = VertexEmbedder(project=settings.gcp_project, location=settings.gcp_region)
    else:
        store, embedder = PgVectorStore(db), MiniLmEmbedder()
    return MemoryService(db, store, embedder, audit,
                         preferences=lambda org_id: dict(orgs.get_preferences(org_id).data))
