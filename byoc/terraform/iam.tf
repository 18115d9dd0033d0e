# Identities: a least-privilege identity for the nodes, and one for the data-plane pods bound to
# the Kubernetes service account through each cloud's workload-identity federation. The pods get
# write access to the logs archive and nothing else; they reach the control plane with their
# data-plane API key, not with cloud credentials.

# --- GKE ---

resource "google_service_account" "gke_nodes" {
  count        = local.gke
  account_id   = "${var.name}-nodes"
  display_name = "Agent Marketplace GKE nodes (${var.name})"
}

resource "google_project_iam_member" "gke_nodes" {
  for_each = local.gke == 1 ? toset(["roles/container.defaultNodeServiceAccount", "roles/artifactregistry.reader"]) : toset([])
  project  = var.gke_project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.gke_nodes[0].email}"
}

resource "google_service_account" "gke_data_plane" {
  count        = local.gke
  account_id   = "${var.name}-agent"
  display_name = "Agent Marketplace data plane (${var.name})"
}

resource "google_service_account_iam_member" "gke_data_plane_workload_identity" {
  count              = local.gke
  service_account_id = google_service_account.gke_data_plane[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${google_container_cluster.gke[0].workload_identity_config[0].workload_pool}[${var.namespace}/${var.service_account_name}]"
}

resource "google_project_iam_member" "gke_data_plane" {
  for_each = local.gke == 1 ? toset(["roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/cloudtrace.agent"]) : toset([])
  project  = var.gke_project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.gke_data_plane[0].email}"
}

resource "google_storage_bucket_iam_member" "gke_data_plane_logs" {
  count  = local.gke
  bucket = google_storage_bucket.gke_logs[0].name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.gke_data_plane[0].email}"
}

# --- EKS ---

data "aws_partition" "eks" {
  count = local.eks
}

resource "aws_iam_role" "eks_cluster" {
  count = local.eks
  name  = "${var.name}-cluster"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy_attachment" "eks_cluster" {
  count      = local.eks
  role       = aws_iam_role.eks_cluster[0].name
  policy_arn = "arn:${data.aws_partition.eks[0].partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_iam_role" "eks_nodes" {
  count = local.eks
  name  = "${var.name}-nodes"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "eks_nodes" {
  for_each   = local.eks == 1 ? toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"]) : toset([])
  role       = aws_iam_role.eks_nodes[0].name
  policy_arn = "arn:${data.aws_partition.eks[0].partition}:iam::aws:policy/${each.value}"
}

# EKS Pod Identity: the agent's service account assumes this role without annotations.
resource "aws_iam_role" "eks_data_plane" {
  count = local.eks
  name  = "${var.name}-agent"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy" "eks_data_plane_logs" {
  count = local.eks
  name  = "agent-logs-archive"
  role  = aws_iam_role.eks_data_plane[0].id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ListLogs"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = aws_s3_bucket.eks_logs[0].arn
      },
      {
        Sid      = "ReadWriteLogs"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject"]
        Resource = "${aws_s3_bucket.eks_logs[0].arn}/*"
      },
    ]
  })
}

resource "aws_eks_pod_identity_association" "eks_data_plane" {
  count           = local.eks
  cluster_name    = aws_eks_cluster.eks[0].name
  namespace       = var.namespace
  service_account = var.service_account_name
  role_arn        = aws_iam_role.eks_data_plane[0].arn
}

resource "aws_iam_role" "eks_efs_csi" {
  count = local.eks
  name  = "${var.name}-efs-csi"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy_attachment" "eks_efs_csi" {
  count      = local.eks
  role       = aws_iam_role.eks_efs_csi[0].name
  policy_arn = "arn:${data.aws_partition.eks[0].partition}:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"
}

# --- AKS ---

# The cluster's identity manages load balancers and routes in the custom node subnet.
resource "azurerm_role_assignment" "aks_network" {
  count                = local.aks
  scope                = azurerm_subnet.aks_nodes[0].id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_kubernetes_cluster.aks[0].identity[0].principal_id
}

resource "azurerm_user_assigned_identity" "aks_data_plane" {
  count               = local.aks
  name                = "${var.name}-agent"
  location            = azurerm_resource_group.aks[0].location
  resource_group_name = azurerm_resource_group.aks[0].name
  tags                = local.labels
}

resource "azurerm_federated_identity_credential" "aks_data_plane" {
  count               = local.aks
  name                = "data-plane-agent"
  resource_group_name = azurerm_resource_group.aks[0].name
  parent_id           = azurerm_user_assigned_identity.aks_data_plane[0].id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.aks[0].oidc_issuer_url
  subject             = local.workload_subject
}

resource "azurerm_role_assignment" "aks_data_plane_logs" {
  count                = local.aks
  scope                = azurerm_storage_account.aks_logs[0].id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.aks_data_plane[0].principal_id
}
