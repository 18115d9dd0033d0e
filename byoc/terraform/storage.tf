# Storage for agent logs. In the cluster, the chart's agent-logs claim (100 GiB, ReadWriteMany,
# pruned after 90 days by the chart's retention job) lives on each cloud's managed NFS: Filestore
# (GKE), EFS (EKS) or Azure Files (AKS). Outside it, an object-storage archive with the same
# retention keeps logs the data plane exports; it is encrypted, private and versioned.

# --- GKE ---

resource "google_storage_bucket" "gke_logs" {
  count                       = local.gke
  name                        = "${var.name}-logs-${local.suffix}"
  location                    = local.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = var.logs_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
}

# --- EKS ---

resource "aws_efs_file_system" "eks_logs" {
  count            = local.eks
  creation_token   = "${var.name}-logs-${local.suffix}"
  encrypted        = true
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"

  lifecycle_policy {
    transition_to_ia = "AFTER_30_DAYS"
  }

  tags = {
    Name = "${var.name}-agent-logs"
  }
}

# Daily backups by AWS Backup's default plan.
resource "aws_efs_backup_policy" "eks_logs" {
  count          = local.eks
  file_system_id = aws_efs_file_system.eks_logs[0].id

  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_security_group" "eks_efs" {
  count       = local.eks
  name        = "${var.name}-efs"
  description = "NFS from the cluster network to the agent-logs file system"
  vpc_id      = aws_vpc.eks[0].id
}

resource "aws_vpc_security_group_ingress_rule" "eks_efs_nfs" {
  count             = local.eks
  security_group_id = aws_security_group.eks_efs[0].id
  cidr_ipv4         = var.network_cidr
  ip_protocol       = "tcp"
  from_port         = 2049
  to_port           = 2049
}

resource "aws_efs_mount_target" "eks_logs" {
  for_each        = aws_subnet.eks_private
  file_system_id  = aws_efs_file_system.eks_logs[0].id
  subnet_id       = each.value.id
  security_groups = [aws_security_group.eks_efs[0].id]
}

resource "aws_s3_bucket" "eks_logs" {
  count         = local.eks
  bucket        = "${var.name}-logs-${local.suffix}"
  force_destroy = false
}

resource "aws_s3_bucket_public_access_block" "eks_logs" {
  count                   = local.eks
  bucket                  = aws_s3_bucket.eks_logs[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "eks_logs" {
  count  = local.eks
  bucket = aws_s3_bucket.eks_logs[0].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "eks_logs" {
  count  = local.eks
  bucket = aws_s3_bucket.eks_logs[0].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "eks_logs" {
  count  = local.eks
  bucket = aws_s3_bucket.eks_logs[0].id

  rule {
    id     = "expire-agent-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.logs_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }
}

resource "aws_s3_bucket_policy" "eks_logs_tls_only" {
  count  = local.eks
  bucket = aws_s3_bucket.eks_logs[0].id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.eks_logs[0].arn, "${aws_s3_bucket.eks_logs[0].arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  depends_on = [aws_s3_bucket_public_access_block.eks_logs]
}

# --- AKS ---

resource "azurerm_storage_account" "aks_logs" {
  count                           = local.aks
  name                            = "${substr(replace(var.name, "-", ""), 0, 12)}${local.suffix}logs"
  resource_group_name             = azurerm_resource_group.aks[0].name
  location                        = azurerm_resource_group.aks[0].location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  tags                            = local.labels

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = 7
    }

    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "aks_logs" {
  count                 = local.aks
  name                  = "agent-logs"
  storage_account_id    = azurerm_storage_account.aks_logs[0].id
  container_access_type = "private"
}

resource "azurerm_storage_management_policy" "aks_logs" {
  count              = local.aks
  storage_account_id = azurerm_storage_account.aks_logs[0].id

  rule {
    name    = "expire-agent-logs"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["agent-logs/"]
    }

    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.logs_retention_days
      }

      version {
        delete_after_days_since_creation = 7
      }
    }
  }
}
