# Secrets the platform reads at run time. Terraform creates the containers; the values are added
# out of band (`gcloud secrets versions add <id> --data-file=-`) so they never enter the state.
# The database password (database.tf) is the exception: Terraform generates it.

resource "google_secret_manager_secret" "app" {
  for_each  = toset(var.secrets)
  secret_id = each.value

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}
