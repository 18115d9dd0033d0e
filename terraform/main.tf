# The SaaS deployment of the Agent Marketplace on Google Cloud: the API as Cloud Functions (gen2)
# behind API Gateway, Cloud SQL (PostgreSQL + pgvector) and Firestore as stores, Cloud Tasks and
# Cloud Run jobs for agent runs, Cloud Scheduler for the periodic jobs, Secret Manager for secrets.

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}

provider "google-beta" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}

locals {
  labels = merge(var.labels, {
    "app"        = "agent-marketplace"
    "managed-by" = "terraform"
  })

  apis = [
    "aiplatform.googleapis.com",
    "apigateway.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "compute.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicecontrol.googleapis.com",
    "servicemanagement.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "vpcaccess.googleapis.com",
  ]

  gateway_url = "https://${google_api_gateway_gateway.marketplace.default_hostname}"

  # Settings every backend process reads (shared/settings.py, prefix MARKETPLACE_); unset
  # optional values are left out rather than passed empty.
  backend_env = { for key, value in {
    MARKETPLACE_MODE               = "gcp"
    MARKETPLACE_CLOUDSQL_INSTANCE  = google_sql_database_instance.main.connection_name
    MARKETPLACE_DB_NAME            = google_sql_database.marketplace.name
    MARKETPLACE_DB_USER            = google_sql_user.marketplace.name
    MARKETPLACE_DB_POOL_SIZE       = "4"
    MARKETPLACE_PUBLIC_URL         = local.gateway_url
    MARKETPLACE_OIDC_ISSUER        = var.oidc_issuer
    MARKETPLACE_OIDC_JWKS_URL      = var.oidc_jwks_url
    MARKETPLACE_TOKEN_AUDIENCE     = var.token_audience
    MARKETPLACE_LOG_LEVEL          = var.log_level
    MARKETPLACE_GCP_PROJECT        = var.project_id
    MARKETPLACE_GCP_REGION         = var.region
    MARKETPLACE_FIRESTORE_DATABASE = google_firestore_database.main.name
    # Memory Level 3 vectors in Vertex AI Vector Search (terraform/vector_search.tf).
    MARKETPLACE_MEMORY_VECTOR_INDEX          = google_vertex_ai_index.memory_knowledge.id
    MARKETPLACE_MEMORY_VECTOR_ENDPOINT       = google_vertex_ai_index_endpoint.memory.id
    MARKETPLACE_MEMORY_VECTOR_DEPLOYED_INDEX = google_vertex_ai_index_endpoint_deployed_index.memory_knowledge.deployed_index_id
    MARKETPLACE_MEMORY_VECTOR_API_ENDPOINT   = google_vertex_ai_index_endpoint.memory.public_endpoint_domain_name
    MARKETPLACE_ARTIFACTS_BUCKET             = google_storage_bucket.artifacts.name
    # Agent packages (issue 14; terraform/storage.tf).
    MARKETPLACE_PACKAGES_BUCKET = google_storage_bucket.agent_packages.name
    # The key-encryption key that wraps every org's data keys (terraform/kms.tf).
    MARKETPLACE_KMS_KEY = google_kms_crypto_key.data_keys.id
  } : key => value if value != null }

  # What the API functions additionally need to dispatch work.
  function_env = merge(local.backend_env, { for key, value in {
    MARKETPLACE_RUNS_QUEUE     = try(google_cloud_tasks_queue.queues["agent-runs"].id, null)
    MARKETPLACE_WEBHOOKS_QUEUE = try(google_cloud_tasks_queue.queues["webhook-deliveries"].id, null)
    MARKETPLACE_TASKS_INVOKER  = google_service_account.tasks.email
    # The Cloud Tasks push target (functions/dispatch.py); its URL is also the tokens' audience.
    MARKETPLACE_DISPATCH_URL = "https://${var.region}-${var.project_id}.cloudfunctions.net/dispatch_task"
    # The Cloud Scheduler target (functions/scheduled.py) and the account its triggers sign as.
    MARKETPLACE_SCHEDULED_URL     = "https://${var.region}-${var.project_id}.cloudfunctions.net/run_scheduled_job"
    MARKETPLACE_SCHEDULER_INVOKER = google_service_account.scheduler.email
    MARKETPLACE_RUNNER_IMAGE      = var.runner_image
    MARKETPLACE_VPC_CONNECTOR     = google_vpc_access_connector.serverless.id
    # Rate limits count an anonymous caller by the address Google's proxies saw (X-Forwarded-For).
    MARKETPLACE_CLIENT_ADDRESS_HOPS = var.client_address_hops == null ? null : tostring(var.client_address_hops)
  } : key => value if value != null })
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  service            = each.value
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "containers" {
  repository_id = var.artifact_repository
  location      = var.region
  format        = "DOCKER"
  description   = "Agent Marketplace images (data-plane runner, agent images)"

  cleanup_policies {
    id     = "delete-old-untagged"
    action = "DELETE"

    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}

# BYOC bundles, reports and run outputs (the architecture's Cloud Storage).
resource "google_storage_bucket" "artifacts" {
  name                        = "${var.project_id}-${var.name_prefix}-artifacts"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }
}
