terraform {
  required_version = ">= 1.9.0"

  # State lives in a Cloud Storage bucket created once per project (with versioning enabled):
  #   terraform init -backend-config="bucket=<project>-marketplace-deploy" -backend-config="prefix=terraform/saas"
  backend "gcs" {}

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10, < 7.0"
    }
    # API Gateway resources exist only in the beta provider.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.10, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }
}
