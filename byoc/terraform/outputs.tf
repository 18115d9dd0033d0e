# Outputs, prefixed by the cloud they belong to. `<cloud>_helm_values` is the cluster-specific part
# of the chart's values (workload identity, storage class):
#   terraform output -json gke_helm_values > cluster-values.json
#   helm install agent-marketplace ./helm-chart -n agent-marketplace -f cluster-values.json

# --- GKE ---

output "gke_cluster_name" {
  description = "Name of the GKE cluster."
  value       = one(google_container_cluster.gke[*].name)
}

output "gke_cluster_endpoint" {
  description = "Address of the GKE control plane."
  value       = one(google_container_cluster.gke[*].endpoint)
  sensitive   = true
}

output "gke_kubeconfig_command" {
  description = "Command that points kubectl and helm at the cluster."
  value       = local.gke == 1 ? "gcloud container clusters get-credentials ${var.name} --region ${local.region} --project ${var.gke_project_id}" : null
}

output "gke_logs_bucket" {
  description = "Cloud Storage bucket archiving agent logs."
  value       = one(google_storage_bucket.gke_logs[*].name)
}

output "gke_data_plane_service_account" {
  description = "Google service account the data-plane pods act as."
  value       = one(google_service_account.gke_data_plane[*].email)
}

output "gke_helm_values" {
  description = "Cluster-specific Helm values for GKE."
  value = local.gke == 1 ? {
    serviceAccount = {
      annotations = { "iam.gke.io/gcp-service-account" = one(google_service_account.gke_data_plane[*].email) }
    }
    persistence = { storageClassName = "standard-rwx" }
  } : null
}

# --- EKS ---

output "eks_cluster_name" {
  description = "Name of the EKS cluster."
  value       = one(aws_eks_cluster.eks[*].name)
}

output "eks_cluster_endpoint" {
  description = "Address of the EKS control plane."
  value       = one(aws_eks_cluster.eks[*].endpoint)
  sensitive   = true
}

output "eks_kubeconfig_command" {
  description = "Command that points kubectl and helm at the cluster."
  value       = local.eks == 1 ? "aws eks update-kubeconfig --name ${var.name} --region ${local.region}" : null
}

output "eks_logs_bucket" {
  description = "S3 bucket archiving agent logs."
  value       = one(aws_s3_bucket.eks_logs[*].bucket)
}

output "eks_logs_file_system_id" {
  description = "EFS file system backing the agent-logs volume."
  value       = one(aws_efs_file_system.eks_logs[*].id)
}

output "eks_helm_values" {
  description = "Cluster-specific Helm values for EKS (Pod Identity needs no service-account annotation)."
  value = local.eks == 1 ? {
    persistence = {
      storageClass = {
        create        = true
        name          = "agent-logs-efs"
        provisioner   = "efs.csi.aws.com"
        reclaimPolicy = "Retain"
        parameters = {
          provisioningMode = "efs-ap"
          fileSystemId     = one(aws_efs_file_system.eks_logs[*].id)
          directoryPerms   = "700"
          uid              = "10001"
          gid              = "10001"
          basePath         = "/agent-logs"
        }
      }
    }
  } : null
}

# --- AKS ---

output "aks_cluster_name" {
  description = "Name of the AKS cluster."
  value       = one(azurerm_kubernetes_cluster.aks[*].name)
}

output "aks_kubeconfig_command" {
  description = "Command that points kubectl and helm at the cluster."
  value       = local.aks == 1 ? "az aks get-credentials --resource-group ${var.name}-rg --name ${var.name}" : null
}

output "aks_logs_container" {
  description = "Storage account and container archiving agent logs."
  value       = local.aks == 1 ? "${one(azurerm_storage_account.aks_logs[*].name)}/agent-logs" : null
}

output "aks_helm_values" {
  description = "Cluster-specific Helm values for AKS."
  value = local.aks == 1 ? {
    serviceAccount = {
      annotations = { "azure.workload.identity/client-id" = one(azurerm_user_assigned_identity.aks_data_plane[*].client_id) }
    }
    podLabels   = { "azure.workload.identity/use" = "true" }
    persistence = { storageClassName = "azurefile-csi" }
  } : null
}
