# The Kubernetes cluster of a BYOC data plane: GKE by default, EKS or AKS by var.cloud. Every
# cloud-specific resource carries `count = local.<cloud>` (1 for the selected cloud, else 0).

locals {
  gke = var.cloud == "gke" ? 1 : 0
  eks = var.cloud == "eks" ? 1 : 0
  aks = var.cloud == "aks" ? 1 : 0

  region = coalesce(var.region, lookup({ gke = "us-central1", eks = "us-east-1", aks = "eastus" }, var.cloud))

  # Globally unique names (buckets, storage accounts) end in a stable digest of the deployment.
  suffix = substr(sha256(var.deployment_id), 0, 8)

  labels = merge(var.labels, {
    "app"                    = "agent-marketplace"
    "managed-by"             = "terraform"
    "marketplace-deployment" = var.deployment_id
    "marketplace-org"        = var.org_id
  })

  # The identity the data-plane pods present to workload-identity federation.
  workload_subject = "system:serviceaccount:${var.namespace}:${var.service_account_name}"
}

# --- Providers ---

provider "google" {
  project        = var.gke_project_id
  region         = local.region
  default_labels = local.labels
}

provider "aws" {
  region = local.region

  default_tags {
    tags = local.labels
  }
}

provider "azurerm" {
  features {}
  subscription_id = var.aks_subscription_id
}

# --- GKE ---

resource "google_container_cluster" "gke" {
  count    = local.gke
  name     = var.name
  location = local.region

  network         = google_compute_network.gke[0].id
  subnetwork      = google_compute_subnetwork.gke[0].id
  networking_mode = "VPC_NATIVE"

  # Node pools are managed separately so they can be replaced without recreating the cluster.
  remove_default_node_pool = true
  initial_node_count       = 1

  min_master_version  = var.kubernetes_version
  deletion_protection = var.deletion_protection
  resource_labels     = local.labels

  release_channel {
    channel = "REGULAR"
  }

  # Dataplane V2 enforces NetworkPolicy.
  datapath_provider = "ADVANCED_DATAPATH"

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.gke_master_cidr
  }

  dynamic "master_authorized_networks_config" {
    for_each = length(var.cluster_admin_cidrs) > 0 ? [1] : []
    content {
      dynamic "cidr_blocks" {
        for_each = var.cluster_admin_cidrs
        content {
          cidr_block   = cidr_blocks.value
          display_name = "admin-${cidr_blocks.key}"
        }
      }
    }
  }

  workload_identity_config {
    workload_pool = "${var.gke_project_id}.svc.id.goog"
  }

  addons_config {
    # ReadWriteMany volumes (storage class standard-rwx) for the shared agent-logs claim.
    gcp_filestore_csi_driver_config {
      enabled = true
    }
    gce_persistent_disk_csi_driver_config {
      enabled = true
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]

    managed_prometheus {
      enabled = true
    }
  }
}

resource "google_container_node_pool" "gke" {
  count    = local.gke
  name     = "data-plane"
  cluster  = google_container_cluster.gke[0].id
  location = local.region

  autoscaling {
    total_min_node_count = var.node_min_count
    total_max_node_count = var.node_max_count
    location_policy      = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.gke_machine_type
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-balanced"
    disk_size_gb    = 100
    service_account = google_service_account.gke_nodes[0].email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    resource_labels = local.labels

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

# --- EKS ---

resource "aws_kms_key" "eks" {
  count                   = local.eks
  description             = "Envelope encryption of Kubernetes secrets in ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
}

resource "aws_eks_cluster" "eks" {
  count                     = local.eks
  name                      = var.name
  version                   = var.kubernetes_version
  role_arn                  = aws_iam_role.eks_cluster[0].arn
  enabled_cluster_log_types = ["api", "audit", "authenticator"]

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  vpc_config {
    subnet_ids              = [for subnet in aws_subnet.eks_private : subnet.id]
    endpoint_private_access = true
    endpoint_public_access  = true
    public_access_cidrs     = length(var.cluster_admin_cidrs) > 0 ? var.cluster_admin_cidrs : ["0.0.0.0/0"]
  }

  encryption_config {
    resources = ["secrets"]

    provider {
      key_arn = aws_kms_key.eks[0].arn
    }
  }

  depends_on = [aws_iam_role_policy_attachment.eks_cluster]
}

resource "aws_eks_node_group" "eks" {
  count           = local.eks
  cluster_name    = aws_eks_cluster.eks[0].name
  node_group_name = "data-plane"
  node_role_arn   = aws_iam_role.eks_nodes[0].arn
  subnet_ids      = [for subnet in aws_subnet.eks_private : subnet.id]
  instance_types  = var.eks_instance_types
  ami_type        = "AL2023_x86_64_STANDARD"
  disk_size       = 100

  scaling_config {
    min_size     = var.node_min_count
    max_size     = var.node_max_count
    desired_size = var.node_min_count
  }

  update_config {
    max_unavailable = 1
  }

  # The cluster autoscaler owns the current size once the group exists.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.eks_nodes]
}

resource "aws_eks_addon" "eks_pod_identity_agent" {
  count        = local.eks
  cluster_name = aws_eks_cluster.eks[0].name
  addon_name   = "eks-pod-identity-agent"
  depends_on   = [aws_eks_node_group.eks]
}

# ReadWriteMany volumes on EFS for the shared agent-logs claim (see storage.tf).
resource "aws_eks_addon" "eks_efs_csi_driver" {
  count        = local.eks
  cluster_name = aws_eks_cluster.eks[0].name
  addon_name   = "aws-efs-csi-driver"

  pod_identity_association {
    role_arn        = aws_iam_role.eks_efs_csi[0].arn
    service_account = "efs-csi-controller-sa"
  }

  depends_on = [aws_eks_addon.eks_pod_identity_agent]
}

# --- AKS ---

resource "azurerm_resource_group" "aks" {
  count    = local.aks
  name     = "${var.name}-rg"
  location = local.region
  tags     = local.labels
}

resource "azurerm_kubernetes_cluster" "aks" {
  count               = local.aks
  name                = var.name
  location            = azurerm_resource_group.aks[0].location
  resource_group_name = azurerm_resource_group.aks[0].name
  dns_prefix          = var.name
  kubernetes_version  = var.kubernetes_version
  sku_tier            = "Standard"
  tags                = local.labels

  oidc_issuer_enabled       = true
  workload_identity_enabled = true
  automatic_upgrade_channel = "stable"
  node_os_upgrade_channel   = "NodeImage"

  default_node_pool {
    name                        = "dataplane"
    temporary_name_for_rotation = "dataplanetmp"
    vm_size                     = var.aks_vm_size
    vnet_subnet_id              = azurerm_subnet.aks_nodes[0].id
    zones                       = var.aks_zones
    auto_scaling_enabled        = true
    min_count                   = var.node_min_count
    max_count                   = var.node_max_count
    os_disk_size_gb             = 100
    tags                        = local.labels

    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium"
    pod_cidr            = "10.244.0.0/16"
    service_cidr        = "10.245.0.0/16"
    dns_service_ip      = "10.245.0.10"
    outbound_type       = "loadBalancer"
  }

  # Azure Files (storage class azurefile-csi) gives the ReadWriteMany agent-logs volume.
  storage_profile {
    file_driver_enabled = true
    disk_driver_enabled = true
  }

  dynamic "api_server_access_profile" {
    for_each = length(var.cluster_admin_cidrs) > 0 ? [1] : []
    content {
      authorized_ip_ranges = var.cluster_admin_cidrs
    }
  }
}
