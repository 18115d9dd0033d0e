# Firestore (native mode): manifests, task summaries, episodes, preferences, run logs.

resource "google_firestore_database" "main" {
  name                              = "(default)"
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "OPTIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.deletion_protection ? "ABANDON" : "DELETE"
  depends_on                        = [google_project_service.apis]
}

# Memory (issue 17): Levels 2-4 under orgs/{org}/memories; vector search pre-filters by level and
# embedder (and namespace for Level 3) over the 1536-d Vertex AI embeddings.
resource "google_firestore_index" "memory_vectors" {
  database    = google_firestore_database.main.name
  collection  = "memories"
  query_scope = "COLLECTION"
  fields {
    field_path = "level"
    order      = "ASCENDING"
  }
  fields {
    field_path = "embedder"
    order      = "ASCENDING"
  }
  fields {
    field_path = "embedding"
    vector_config {
      dimension = 1536
      flat {}
    }
  }
}

resource "google_firestore_index" "memory_knowledge_vectors" {
  database    = google_firestore_database.main.name
  collection  = "memories"
  query_scope = "COLLECTION"
  fields {
    field_path = "level"
    order      = "ASCENDING"
  }
  fields {
    field_path = "embedder"
    order      = "ASCENDING"
  }
  fields {
    field_path = "namespace"
    order      = "ASCENDING"
  }
  fields {
    field_path = "embedding"
    vector_config {
      dimension = 1536
      flat {}
    }
  }
}
