# Inputs of the SaaS deployment. Cloud Build passes the per-build ones (runner_image,
# function_names, function_source_object, openapi_spec_path) in ci.auto.tfvars.json.

variable "project_id" {
  description = "Google Cloud project of the platform."
  type        = string
}

variable "region" {
  description = "Region of every regional resource (API Gateway must be available there)."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of resource and service-account names."
  type        = string
  default     = "marketplace"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,11}$", var.name_prefix))
    error_message = "name_prefix must be 3-12 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Extra labels for every resource."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Protect the database, Firestore and Cloud Run resources against `terraform destroy`."
  type        = bool
  default     = true
}

# --- Network ---

variable "connector_cidr" {
  description = "/28 range of the Serverless VPC Access connector (functions and jobs reach Cloud SQL through it)."
  type        = string
  default     = "10.8.0.0/28"
}

# --- Cloud SQL ---

variable "db_version" {
  description = "Cloud SQL PostgreSQL version (pgvector ships with every supported version)."
  type        = string
  default     = "POSTGRES_16"
}

variable "db_tier" {
  description = "Machine tier of the primary instance (Enterprise edition)."
  type        = string
  default     = "db-custom-2-7680"
}

variable "db_availability_type" {
  description = "REGIONAL for a high-availability standby in a second zone, ZONAL otherwise."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "ZONAL"], var.db_availability_type)
    error_message = "db_availability_type must be REGIONAL or ZONAL."
  }
}

variable "db_disk_size_gb" {
  description = "Initial disk size; the disk grows automatically."
  type        = number
  default     = 50
}

variable "db_max_connections" {
  description = "max_connections of the server; size it for (functions x instances x pool size)."
  type        = number
  default     = 500
}

variable "db_backup_retention_count" {
  description = "Number of daily backups kept."
  type        = number
  default     = 30
}

variable "db_read_replicas" {
  description = "Read replicas of the primary instance."
  type        = number
  default     = 0
}

# --- Firestore ---

variable "firestore_location" {
  description = "Firestore location; a multi-region (nam5, eur3) replicates across regions."
  type        = string
  default     = "nam5"
}

# --- Images and functions ---

variable "runner_image" {
  description = "Data-plane runner image (byoc/Dockerfile) in Artifact Registry, e.g. us-central1-docker.pkg.dev/p/marketplace/data-plane-runner:abc123."
  type        = string
}

variable "artifact_repository" {
  description = "Artifact Registry Docker repository for the platform's images."
  type        = string
  default     = "marketplace"
}

variable "function_names" {
  description = "One Cloud Function (gen2) per API operation, scheduled job and task handler; each is its own entry point."
  type        = list(string)

  validation {
    condition     = alltrue([for name in var.function_names : can(regex("^[a-z][a-z0-9_]{0,62}$", name))])
    error_message = "function names must be lowercase identifiers (letters, digits, underscores) of at most 63 characters."
  }
}

variable "function_source_bucket" {
  description = "Bucket holding the functions' source archive (the deploy bucket that also keeps the state)."
  type        = string
}

variable "function_source_object" {
  description = "Source archive (zip) the functions are created from; later code roll-outs are done by `gcloud functions deploy`."
  type        = string

  validation {
    condition     = startswith(var.function_source_object, "functions/") && endswith(var.function_source_object, ".zip")
    error_message = "function_source_object must be a functions/<name>.zip object (the only prefix builds may read)."
  }
}

variable "function_runtime" {
  description = "Cloud Functions runtime."
  type        = string
  default     = "python311"
}

variable "function_memory" {
  description = "Memory of each function instance."
  type        = string
  default     = "512Mi"
}

variable "function_timeout_seconds" {
  description = "Request timeout of each function."
  type        = number
  default     = 60
}

variable "function_max_instances" {
  description = "Most instances per function (each holds a small database pool)."
  type        = number
  default     = 20
}

variable "function_min_instances" {
  description = "Warm instances per function (0 scales to zero)."
  type        = number
  default     = 0
}

variable "function_secret_env" {
  description = "Extra secret environment variables of the functions: env var name => secret id (from var.secrets). Add a secret version before listing it."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for secret in values(var.function_secret_env) : contains(var.secrets, secret)])
    error_message = "function_secret_env may only reference secrets listed in var.secrets."
  }
}

variable "task_handler_functions" {
  description = "Functions that Cloud Tasks calls (e.g. webhook delivery); the tasks service account may invoke them."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for name in var.task_handler_functions : contains(var.function_names, name)])
    error_message = "every task handler must be listed in function_names."
  }
}

variable "log_level" {
  description = "Log level of functions, jobs and the data plane."
  type        = string
  default     = "INFO"
}

# --- Authentication ---

variable "oidc_issuer" {
  description = "OIDC issuer whose tokens the API accepts (MARKETPLACE_OIDC_ISSUER)."
  type        = string
}

variable "oidc_jwks_url" {
  description = "JWKS URL of the issuer; null discovers it from the issuer's metadata."
  type        = string
  default     = null
}

variable "client_address_hops" {
  description = "Proxies in front of the API functions whose X-Forwarded-For entries are trusted: the client address is the N-th entry from the right (MARKETPLACE_CLIENT_ADDRESS_HOPS). Null counts anonymous calls by the connection's peer, which behind API Gateway is one address for everyone; measure a deployment's header before setting it."
  type        = number
  default     = null
}

variable "token_audience" {
  description = "Audience the API's access tokens must carry."
  type        = string
  default     = "marketplace-api"
}

# --- API Gateway ---

variable "openapi_spec_path" {
  description = "Path of the API Gateway config (OpenAPI 2.0) made by `marketplace openapi --gateway`."
  type        = string

  validation {
    condition     = fileexists(var.openapi_spec_path)
    error_message = "openapi_spec_path must name an existing file."
  }
}

# --- Secrets ---

variable "secrets" {
  description = "Secret Manager secrets the platform reads (versions are added out of band: `gcloud secrets versions add`)."
  type        = list(string)
  default     = ["stripe-api-key", "stripe-webhook-secret", "dataplane-api-key"]
}

# --- Cloud Tasks ---

variable "task_queues" {
  description = "Cloud Tasks queues: agent runs (pushed to dispatch_task, which starts the deployment's Cloud Run job) and webhook deliveries."
  type = map(object({
    max_dispatches_per_second = number
    max_concurrent_dispatches = number
    max_attempts              = number
    min_backoff               = string
    max_backoff               = string
  }))
  default = {
    "agent-runs" = {
      max_dispatches_per_second = 50
      max_concurrent_dispatches = 200
      max_attempts              = 20
      min_backoff               = "5s"
      max_backoff               = "300s"
    }
    "webhook-deliveries" = {
      max_dispatches_per_second = 20
      max_concurrent_dispatches = 50
      max_attempts              = 12
      min_backoff               = "10s"
      max_backoff               = "3600s"
    }
  }
}

# --- Cloud Run ---

variable "data_plane_enabled" {
  description = "Run the shared SaaS data-plane service; needs a version of the dataplane-api-key secret first."
  type        = bool
  default     = false
}

variable "data_plane_min_instances" {
  description = "Fewest data-plane instances."
  type        = number
  default     = 1
}

variable "data_plane_max_instances" {
  description = "Most data-plane instances."
  type        = number
  default     = 20
}

# --- Cloud KMS ---

variable "kek_rotation_period" {
  description = "How often Cloud KMS rotates the key-encryption key of the org data keys (seconds, with an s)."
  type        = string
  default     = "7776000s" # 90 days
}

# --- Cloud Scheduler ---

variable "time_zone" {
  description = "Time zone of the scheduled jobs."
  type        = string
  default     = "Etc/UTC"
}

variable "scheduled_jobs" {
  description = "Cloud Scheduler jobs, each calling one function (which must be in function_names): the key names the job, the body carries it."
  type = map(object({
    schedule    = string
    function    = string
    description = string
  }))
  default = {
    # Platform jobs of functions/scheduler.py, by name (the key is the job's name).
    "deployments-unreachable" = {
      schedule    = "* * * * *"
      function    = "run_scheduled_job"
      description = "Mark ready deployments whose data plane stopped heartbeating as unreachable."
    }
    "runs-reconcile" = {
      schedule    = "* * * * *"
      function    = "run_scheduled_job"
      description = "Close the runs whose task ended without them."
    }
    "webhooks-deliver" = {
      schedule    = "* * * * *"
      function    = "run_scheduled_job"
      description = "Deliver due webhook events and retries."
    }
    "secrets-rewrap" = {
      schedule    = "*/10 * * * *"
      function    = "run_scheduled_job"
      description = "Re-wrap the data keys an older Cloud KMS key version wrapped with the primary version."
    }
    "webhooks-reseal" = {
      schedule    = "*/10 * * * *"
      function    = "run_scheduled_job"
      description = "Seal again the webhook secrets an org's older data key sealed."
    }
    "webhooks-purge" = {
      schedule    = "17 * * * *"
      function    = "run_scheduled_job"
      description = "Delete webhook history older than 30 days that no delivery waits on, in batches."
    }
    "queue-relay" = {
      schedule    = "* * * * *"
      function    = "run_scheduled_job"
      description = "Push the redeliveries of expired leases (and failed pushes) to Cloud Tasks."
    }
    "billing-cycle" = {
      schedule    = "7 * * * *"
      function    = "run_scheduled_job"
      description = "Close last month into invoices (once), send them to Stripe, freeze orgs unpaid past the grace period."
    }
    "billing-payouts" = {
      schedule    = "17 * * * *"
      function    = "run_scheduled_job"
      description = "Transfer each developer's balance of last month (once, when it reaches 100 USD) through Stripe Connect."
    }
    "approvals-expire" = {
      schedule    = "* * * * *"
      function    = "run_scheduled_job"
      description = "Expire pending approvals past their expiry; their runs resume not approved."
    }
    "approvals-remind" = {
      schedule    = "*/5 * * * *"
      function    = "run_scheduled_job"
      description = "Remind approvers of approvals about to expire."
    }
    "notifications-deliver" = {
      schedule    = "* * * * *"
      function    = "run_scheduled_job"
      description = "Send due email and Slack notifications and their retries."
    }
    "memory-gc" = {
      schedule    = "*/5 * * * *"
      function    = "run_scheduled_job"
      description = "Delete expired Level 2 and Level 4 memories in bounded batches (issue 17)."
    }
  }

  validation {
    condition     = alltrue([for job in values(var.scheduled_jobs) : contains(var.function_names, job.function)])
    error_message = "every scheduled job must call a function listed in function_names."
  }
}
