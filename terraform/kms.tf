# The key-encryption key (SPEC §5 "secrets"): a Cloud KMS key wraps every org's data keys, which
# seal webhook signing secrets and stored idempotent responses (shared/secrets/). KMS rotates it
# on the schedule below (a new primary version); older versions stay enabled, so what they
# wrapped keeps opening while the "secrets-rewrap" job re-wraps every data key with the primary.
# Disable an old version only once no data key names it (secret_keys.kek_version).
resource "google_kms_key_ring" "marketplace" {
  name       = var.name_prefix
  location   = var.region
  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "data_keys" {
  name            = "${var.name_prefix}-data-keys"
  key_ring        = google_kms_key_ring.marketplace.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kek_rotation_period

  # Destroying the key loses every secret it protects.
  lifecycle {
    prevent_destroy = true
  }
}

# The API functions wrap and unwrap data keys, and nothing else.
resource "google_kms_crypto_key_iam_member" "functions" {
  crypto_key_id = google_kms_crypto_key.data_keys.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_service_account.functions.email}"
}
