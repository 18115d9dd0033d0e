# Vertex AI Vector Search: memory Level 3 (knowledge) vectors in gcp mode
# (shared/memory/adapters/vertex_vector_store.py; the documents stay in Firestore). Every
# datapoint carries the restricts org_id, level, embedder and namespace and the numeric restrict
# expires_at; every query allow-lists the caller's org. Streaming updates: a document added
# through the API is searchable without a batch rebuild.

resource "google_vertex_ai_index" "memory_knowledge" {
  region              = var.region
  display_name        = "memory-knowledge"
  description         = "Memory Level 3 vectors (1536-d Vertex AI embeddings), filtered per org by restricts"
  index_update_method = "STREAM_UPDATE"

  metadata {
    config {
      dimensions                  = 1536
      approximate_neighbors_count = 50
      # Unit vectors and the dot product: cosine similarity, as Vertex recommends.
      distance_measure_type = "DOT_PRODUCT_DISTANCE"
      feature_norm_type     = "UNIT_L2_NORM"
      shard_size            = "SHARD_SIZE_SMALL"
      algorithm_config {
        tree_ah_config {
          leaf_node_embedding_count    = 1000
          leaf_nodes_to_search_percent = 10
        }
      }
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_vertex_ai_index_endpoint" "memory" {
  region                  = var.region
  display_name            = "memory"
  public_endpoint_enabled = true
  depends_on              = [google_project_service.apis]
}

resource "google_vertex_ai_index_endpoint_deployed_index" "memory_knowledge" {
  index_endpoint    = google_vertex_ai_index_endpoint.memory.id
  index             = google_vertex_ai_index.memory_knowledge.id
  deployed_index_id = "memory_knowledge_v1"
  display_name      = "memory-knowledge"
  automatic_resources {
    min_replica_count = 1
    max_replica_count = 2
  }
}
