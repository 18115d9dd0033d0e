# Service accounts, one per workload, each with only the roles it uses. Resource-level grants
# (one queue, one secret, one job, one function) are preferred to project-level ones.

resource "google_service_account" "functions" {
  account_id   = "${var.name_prefix}-functions"
  display_name = "Agent Marketplace API functions"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "functions_build" {
  account_id   = "${var.name_prefix}-fn-build"
  display_name = "Agent Marketplace function builds"
  depends_on   = [google_project_service.apis]
}

# The shared data-plane service's identity. Each SaaS deployment's Cloud Run job runs as an
# account of its own instead, which the functions create at install and delete at uninstall
# (shared/deployments/adapters/cloudrun_provisioner.py): it reads its own key and nothing else.
resource "google_service_account" "data_plane" {
  account_id   = "${var.name_prefix}-data-plane"
  display_name = "Agent Marketplace SaaS data plane (Cloud Run)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "tasks" {
  account_id   = "${var.name_prefix}-tasks"
  display_name = "Agent Marketplace Cloud Tasks dispatcher"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Agent Marketplace Cloud Scheduler"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "gateway" {
  account_id   = "${var.name_prefix}-gateway"
  display_name = "Agent Marketplace API Gateway backend"
  depends_on   = [google_project_service.apis]
}

locals {
  # Project-level roles with no narrower resource to grant them on.
  project_roles = {
    functions = [
      "roles/cloudsql.client",
      "roles/datastore.user",
      "roles/aiplatform.user",
      "roles/logging.logWriter",
      "roles/monitoring.metricWriter",
      "roles/cloudtrace.agent",
      # Creates the per-deployment Cloud Run data planes of SaaS installs.
      "roles/run.developer",
    ]
    functions_build = [
      "roles/logging.logWriter",
      "roles/artifactregistry.writer",
    ]
    data_plane = [
      "roles/aiplatform.user",
      "roles/logging.logWriter",
      "roles/monitoring.metricWriter",
      "roles/cloudtrace.agent",
    ]
  }

  service_account_emails = {
    functions       = google_service_account.functions.email
    functions_build = google_service_account.functions_build.email
    data_plane      = google_service_account.data_plane.email
    tasks           = google_service_account.tasks.email
    scheduler       = google_service_account.scheduler.email
    gateway         = google_service_account.gateway.email
  }

  project_grants = {
    for grant in flatten([
      for account, roles in local.project_roles : [
        for role in roles : { key = "${account}/${role}", account = account, role = role }
      ]
    ]) : grant.key => grant
  }
}

resource "google_project_iam_member" "workloads" {
  for_each = local.project_grants
  project  = var.project_id
  role     = each.value.role
  member   = "serviceAccount:${local.service_account_emails[each.value.account]}"
}

# The functions enqueue tasks that run as the tasks account.
resource "google_service_account_iam_member" "functions_act_as" {
  for_each = {
    tasks = google_service_account.tasks.name
  }
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_cloud_tasks_queue_iam_member" "functions_enqueue" {
  for_each = google_cloud_tasks_queue.queues
  name     = each.value.name
  location = var.region
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_storage_bucket_iam_member" "artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.functions.email}"
}

# The deploy bucket also holds the Terraform state: builds may read the function sources only.
resource "google_storage_bucket_iam_member" "functions_build_source" {
  bucket = var.function_source_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.functions_build.email}"

  condition {
    title      = "function-sources-only"
    expression = "resource.name.startsWith(\"projects/_/buckets/${var.function_source_bucket}/objects/functions/\")"
  }
}

# --- Secret access: each secret only to the workloads that read it ---

resource "google_secret_manager_secret_iam_member" "db_password" {
  secret_id = google_secret_manager_secret.db_password.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

resource "google_secret_manager_secret_iam_member" "functions" {
  for_each  = toset(values(var.function_secret_env))
  secret_id = google_secret_manager_secret.app[each.value].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}

data "google_project" "this" {
  project_id = var.project_id
}

# The shared data-plane service reads its own key only. The per-deployment jobs' accounts get
# no grant here: the functions set each deployment secret's policy to its own account alone.
resource "google_secret_manager_secret_iam_member" "data_plane_key" {
  secret_id = google_secret_manager_secret.app["dataplane-api-key"].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.data_plane.email}"
}

# SaaS installs store each deployment's data-plane key in its own secret (dataplane-<id>): the
# functions create it, add versions and destroy superseded ones, but cannot read any payload.
resource "google_project_iam_custom_role" "dataplane_key_writer" {
  role_id     = "${replace(var.name_prefix, "-", "_")}_dataplane_key_writer"
  title       = "Agent Marketplace data-plane key writer"
  description = "Create data-plane key secrets and rotate their versions, without access to payloads."
  permissions = [
    "secretmanager.secrets.create",
    "secretmanager.secrets.delete",
    "secretmanager.secrets.get",
    "secretmanager.secrets.update",
    "secretmanager.versions.add",
    "secretmanager.versions.destroy",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
  ]
}

resource "google_project_iam_member" "functions_dataplane_keys" {
  project = var.project_id
  role    = google_project_iam_custom_role.dataplane_key_writer.id
  member  = "serviceAccount:${google_service_account.functions.email}"
}

# Each deployment's key secret is readable by that deployment's account alone: the functions set
# the policy of the per-deployment dataplane-* secrets, and of no other secret (not the shared
# data plane's dataplane-api-key, not the platform's own secrets).
resource "google_project_iam_custom_role" "dataplane_key_granter" {
  role_id     = "${replace(var.name_prefix, "-", "_")}_dataplane_key_granter"
  title       = "Agent Marketplace data-plane key granter"
  description = "Set who may read a per-deployment data-plane key secret."
  permissions = [
    "secretmanager.secrets.getIamPolicy",
    "secretmanager.secrets.setIamPolicy",
  ]
}

resource "google_project_iam_member" "functions_dataplane_key_grants" {
  project = var.project_id
  role    = google_project_iam_custom_role.dataplane_key_granter.id
  member  = "serviceAccount:${google_service_account.functions.email}"

  condition {
    title      = "per-deployment-dataplane-keys-only"
    expression = "resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/dataplane-\") && !resource.name.startsWith(\"projects/${data.google_project.this.number}/secrets/dataplane-api-key\")"
  }
}

# The per-deployment data-plane identities: the functions create and delete one service account
# per SaaS deployment and run its Cloud Run job as it (actAs). A custom role rather than
# roles/iam.serviceAccountAdmin: no keys, no policy changes on accounts.
resource "google_project_iam_custom_role" "dataplane_identity_admin" {
  role_id     = "${replace(var.name_prefix, "-", "_")}_dataplane_identity_admin"
  title       = "Agent Marketplace data-plane identity admin"
  description = "Create and delete the per-deployment data-plane service accounts and run jobs as them."
  permissions = [
    "iam.serviceAccounts.actAs",
    "iam.serviceAccounts.create",
    "iam.serviceAccounts.delete",
    "iam.serviceAccounts.get",
  ]
}

resource "google_project_iam_member" "functions_dataplane_identities" {
  project = var.project_id
  role    = google_project_iam_custom_role.dataplane_identity_admin.id
  member  = "serviceAccount:${google_service_account.functions.email}"
}

# --- Invocation: who may call which function or job ---

resource "google_cloud_run_service_iam_member" "gateway_invokes_functions" {
  for_each = google_cloudfunctions2_function.api
  location = var.region
  service  = each.value.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.gateway.email}"
}

resource "google_cloud_run_service_iam_member" "scheduler_invokes_functions" {
  for_each = toset([for job in values(var.scheduled_jobs) : job.function])
  location = var.region
  service  = google_cloudfunctions2_function.api[each.value].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_run_service_iam_member" "tasks_invoke_functions" {
  for_each = toset(var.task_handler_functions)
  location = var.region
  service  = google_cloudfunctions2_function.api[each.value].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}
