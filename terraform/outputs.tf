output "gateway_url" {
  description = "Public base URL of the API (API Gateway)."
  value       = local.gateway_url
}

output "api_config_id" {
  description = "The API Gateway config currently served."
  value       = google_api_gateway_api_config.marketplace.api_config_id
}

output "cloudsql_connection_name" {
  description = "Cloud SQL instance connection name (MARKETPLACE_CLOUDSQL_INSTANCE)."
  value       = google_sql_database_instance.main.connection_name
}

output "cloudsql_private_ip" {
  description = "Private IP address of the primary database."
  value       = google_sql_database_instance.main.private_ip_address
}

output "firestore_database" {
  description = "Firestore database name."
  value       = google_firestore_database.main.name
}

output "task_queues" {
  description = "Cloud Tasks queue ids by purpose."
  value       = { for key, queue in google_cloud_tasks_queue.queues : key => queue.id }
}

output "data_plane_url" {
  description = "URL of the shared SaaS data-plane service (internal ingress), when enabled."
  value       = one(google_cloud_run_v2_service.data_plane[*].uri)
}

output "function_urls" {
  description = "URL of each function."
  value       = { for name, function in google_cloudfunctions2_function.api : name => function.url }
}

output "service_accounts" {
  description = "Service account of each workload."
  value       = local.service_account_emails
}

output "artifact_registry_repository" {
  description = "Docker repository path for images."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.containers.repository_id}"
}

output "artifacts_bucket" {
  description = "Bucket of BYOC bundles, reports and run outputs."
  value       = google_storage_bucket.artifacts.name
}

output "agent_packages_bucket" {
  description = "Bucket of agent packages (each version's code archive, by sha256)."
  value       = google_storage_bucket.agent_packages.name
}
