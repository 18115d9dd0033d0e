# Cloud Tasks queues. Agent-run tasks are pushed to the dispatch_task function, which starts an
# execution of the deployment's Cloud Run job (at-least-once; the run lease makes a repeated start
# harmless).

resource "google_cloud_tasks_queue" "queues" {
  for_each = var.task_queues
  name     = "${var.name_prefix}-${each.key}"
  location = var.region

  rate_limits {
    max_dispatches_per_second = each.value.max_dispatches_per_second
    max_concurrent_dispatches = each.value.max_concurrent_dispatches
  }

  retry_config {
    max_attempts  = each.value.max_attempts
    min_backoff   = each.value.min_backoff
    max_backoff   = each.value.max_backoff
    max_doublings = 5
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}
