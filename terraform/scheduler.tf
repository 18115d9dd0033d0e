# Periodic jobs (var.scheduled_jobs), each a POST to its function with an OIDC token of the
# scheduler account; the body names the job. The jobs are idempotent, so a retried or doubled
# trigger changes nothing.

resource "google_cloud_scheduler_job" "jobs" {
  for_each         = var.scheduled_jobs
  name             = "${var.name_prefix}-${each.key}"
  region           = var.region
  description      = each.value.description
  schedule         = each.value.schedule
  time_zone        = var.time_zone
  attempt_deadline = "320s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "600s"
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.api[each.value.function].url
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode(jsonencode({ job = each.key }))

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.api[each.value.function].url
    }
  }

  depends_on = [google_cloud_run_service_iam_member.scheduler_invokes_functions]
}
