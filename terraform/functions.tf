# One Cloud Function (gen2) per API operation, scheduled job and task handler, all built from the
# same source archive; the function name is its entry point in functions/main.py. Terraform owns
# each function's configuration; code roll-outs are `gcloud functions deploy` in cloudbuild.yaml,
# so the source is ignored after creation.

resource "google_cloudfunctions2_function" "api" {
  for_each    = toset(var.function_names)
  name        = each.value
  location    = var.region
  description = "Agent Marketplace operation ${each.value}"

  build_config {
    runtime         = var.function_runtime
    entry_point     = each.value
    service_account = google_service_account.functions_build.id

    environment_variables = {
      GOOGLE_FUNCTION_SOURCE = "functions/main.py"
    }

    source {
      storage_source {
        bucket = var.function_source_bucket
        object = var.function_source_object
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.functions.email
    available_memory                 = var.function_memory
    timeout_seconds                  = var.function_timeout_seconds
    min_instance_count               = var.function_min_instances
    max_instance_count               = var.function_max_instances
    max_instance_request_concurrency = 1
    all_traffic_on_latest_revision   = true
    # Reached through API Gateway, Cloud Scheduler and Cloud Tasks; IAM (run.invoker) rejects
    # every caller without a grant in iam.tf.
    ingress_settings              = "ALLOW_ALL"
    vpc_connector                 = google_vpc_access_connector.serverless.id
    vpc_connector_egress_settings = "PRIVATE_RANGES_ONLY"
    environment_variables         = local.function_env

    secret_environment_variables {
      key        = "MARKETPLACE_DB_PASSWORD"
      project_id = var.project_id
      secret     = google_secret_manager_secret.db_password.secret_id
      version    = "latest"
    }

    dynamic "secret_environment_variables" {
      for_each = var.function_secret_env
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = google_secret_manager_secret.app[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  lifecycle {
    ignore_changes = [build_config[0].source]
  }

  depends_on = [
    google_project_iam_member.workloads,
    google_storage_bucket_iam_member.functions_build_source,
    google_secret_manager_secret_iam_member.db_password,
    google_secret_manager_secret_iam_member.functions,
    google_secret_manager_secret_version.db_password,
    google_kms_crypto_key_iam_member.functions,
  ]
}
