# Cloud Run: the shared SaaS data plane (the same runner image as BYOC, polling the control plane
# through the gateway). The per-run Cloud Run jobs are not here: the functions create one per SaaS
# deployment at install (shared/deployments/adapters/cloudrun_provisioner.py, each running as a
# service account of its own) and POST /internal/tasks/dispatch starts an execution of it for each
# Cloud Tasks delivery.

resource "google_cloud_run_v2_service" "data_plane" {
  count               = var.data_plane_enabled ? 1 : 0
  name                = "${var.name_prefix}-data-plane"
  location            = var.region
  deletion_protection = var.deletion_protection
  # Nothing calls the data plane; it only polls out.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"

  template {
    service_account                  = google_service_account.data_plane.email
    max_instance_request_concurrency = 10

    scaling {
      min_instance_count = var.data_plane_min_instances
      max_instance_count = var.data_plane_max_instances
    }

    containers {
      image = var.runner_image

      ports {
        container_port = 8000
      }

      resources {
        limits = {
          cpu    = "2"
          memory = "4Gi"
        }
        # The runner polls between requests, so CPU stays allocated.
        cpu_idle = false
      }

      startup_probe {
        period_seconds    = 5
        failure_threshold = 24
        http_get {
          path = "/health"
          port = 8000
        }
      }

      liveness_probe {
        period_seconds = 30
        http_get {
          path = "/health"
          port = 8000
        }
      }

      env {
        name  = "MARKETPLACE_CONTROL_PLANE_URL"
        value = local.gateway_url
      }

      env {
        name  = "MARKETPLACE_LOG_LEVEL"
        value = var.log_level
      }

      env {
        name = "MARKETPLACE_DATAPLANE_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.app["dataplane-api-key"].secret_id
            version = "latest"
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.data_plane_key]
}
