# Agent packages (issue 14): each version's code archive, content-addressed
# (objects packages/sha256/<hex>, written once with ifGenerationMatch=0 by
# shared/catalog/adapters/gcs_artifacts.py). An object never changes, so versioning stays off.
resource "google_storage_bucket" "agent_packages" {
  name                        = "${var.project_id}-${var.name_prefix}-agent-packages"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = false
  }
}

# The functions store and read packages (upload, the data plane's fetch).
resource "google_storage_bucket_iam_member" "agent_packages_functions" {
  bucket = google_storage_bucket.agent_packages.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.functions.email}"
}

# The runner's account may read them. Today data planes fetch a package from the control plane
# (GET /dataplane/packages/{sha256}, checked against their deployments); this read lets a runner in
# the project pull by digest directly should it ever need to.
resource "google_storage_bucket_iam_member" "agent_packages_runner" {
  bucket = google_storage_bucket.agent_packages.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.data_plane.email}"
}
