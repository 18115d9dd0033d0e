# Provider requirements for the customer cluster. The template declares all three clouds so one
# configuration covers GKE, EKS and AKS (selected by var.cloud); the bundle generator
# (byoc/bundle.py) keeps only the selected cloud's blocks, so `terraform init` in a bundle
# installs, and `terraform apply` needs credentials for, that one cloud only.
terraform {
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10, < 7.0"
    }
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.75, < 6.0"
    }
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.10, < 5.0"
    }
  }
}
