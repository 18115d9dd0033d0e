# API Gateway in front of the functions. The config comes from `marketplace openapi --gateway`
# (one x-google-backend per operation); a changed document creates a new, content-named config
# and the gateway switches to it before the old one is deleted.

resource "google_api_gateway_api" "marketplace" {
  provider     = google-beta
  api_id       = "${var.name_prefix}-api"
  display_name = "Agent Marketplace API"
  depends_on   = [google_project_service.apis]
}

resource "google_api_gateway_api_config" "marketplace" {
  provider      = google-beta
  api           = google_api_gateway_api.marketplace.api_id
  api_config_id = "config-${substr(filesha256(var.openapi_spec_path), 0, 16)}"
  display_name  = "Agent Marketplace API (${substr(filesha256(var.openapi_spec_path), 0, 16)})"

  openapi_documents {
    document {
      path     = basename(var.openapi_spec_path)
      contents = filebase64(var.openapi_spec_path)
    }
  }

  # Calls to the functions carry an ID token of this account (run.invoker, iam.tf).
  gateway_config {
    backend_config {
      google_service_account = google_service_account.gateway.email
    }
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_api_gateway_gateway" "marketplace" {
  provider     = google-beta
  region       = var.region
  gateway_id   = "${var.name_prefix}-gateway"
  display_name = "Agent Marketplace API"
  api_config   = google_api_gateway_api_config.marketplace.id
}
