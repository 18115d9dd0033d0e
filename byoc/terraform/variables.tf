# Inputs of the customer-cluster template. Variables prefixed gke_, eks_ or aks_ belong to that
# cloud only; the bundle generator drops the other clouds' variables.

variable "cloud" {
  description = "Where the data plane runs: gke (Google Cloud, the default), eks (AWS) or aks (Azure)."
  type        = string
  default     = "gke"

  validation {
    condition     = contains(["gke", "eks", "aks"], var.cloud)
    error_message = "cloud must be one of gke, eks or aks."
  }
}

variable "name" {
  description = "Base name of the cluster and of every resource created for it."
  type        = string
  default     = "agent-marketplace"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,18}[a-z0-9]$", var.name))
    error_message = "name must be 4-20 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "deployment_id" {
  description = "The marketplace deployment this cluster serves (labels, unique bucket names)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$", var.deployment_id))
    error_message = "deployment_id must be 1-63 lowercase letters, digits, '_' or '-'."
  }
}

variable "org_id" {
  description = "The marketplace organisation that owns the deployment (labels only)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?)?$", var.org_id))
    error_message = "org_id must be empty or 1-63 lowercase letters, digits, '_' or '-'."
  }
}

variable "region" {
  description = "Region of the cluster; null picks us-central1 (gke), us-east-1 (eks) or eastus (aks)."
  type        = string
  default     = null
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane; null lets the cloud pick its default."
  type        = string
  default     = null
}

variable "network_cidr" {
  description = "Address space of the cluster network (VPC / VNet); must not overlap networks it peers with."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.network_cidr)) && tonumber(split("/", var.network_cidr)[1]) <= 16
    error_message = "network_cidr must be an IPv4 CIDR block of size /16 or larger."
  }
}

variable "node_min_count" {
  description = "Fewest worker nodes. Each data-plane replica requests 2 CPU and 4 GiB; the chart runs 2-10 replicas."
  type        = number
  default     = 2

  validation {
    condition     = var.node_min_count >= 1
    error_message = "node_min_count must be at least 1."
  }
}

variable "node_max_count" {
  description = "Most worker nodes the cluster autoscaler may add (EKS: install Cluster Autoscaler or Karpenter to use it)."
  type        = number
  default     = 4

  validation {
    condition     = var.node_max_count >= var.node_min_count
    error_message = "node_max_count must be at least node_min_count."
  }
}

variable "cluster_admin_cidrs" {
  description = "CIDR blocks allowed to reach the Kubernetes API (kubectl, helm). Empty: any address, authenticated."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.cluster_admin_cidrs : can(cidrnetmask(cidr))])
    error_message = "cluster_admin_cidrs must be IPv4 CIDR blocks."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the data plane (must match the Helm chart's namespace)."
  type        = string
  default     = "agent-marketplace"
}

variable "service_account_name" {
  description = "Kubernetes service account of the data-plane pods (the workload identity subject)."
  type        = string
  default     = "data-plane-agent"
}

variable "logs_retention_days" {
  description = "Days archived agent logs are kept before deletion."
  type        = number
  default     = 90

  validation {
    condition     = var.logs_retention_days >= 1
    error_message = "logs_retention_days must be at least 1."
  }
}

variable "deletion_protection" {
  description = "Protect the cluster against accidental `terraform destroy`."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Extra labels / tags for every resource."
  type        = map(string)
  default     = {}
}

# --- Google Cloud (cloud = "gke") ---

variable "gke_project_id" {
  description = "Google Cloud project that hosts the cluster (required for gke)."
  type        = string
  default     = null

  validation {
    condition     = var.cloud != "gke" || var.gke_project_id != null
    error_message = "gke_project_id is required when cloud is gke."
  }
}

variable "gke_machine_type" {
  description = "Machine type of the GKE node pool."
  type        = string
  default     = "e2-standard-8"
}

variable "gke_master_cidr" {
  description = "/28 block for the GKE control plane's private endpoint."
  type        = string
  default     = "172.16.0.32/28"
}

# --- AWS (cloud = "eks") ---

variable "eks_instance_types" {
  description = "EC2 instance types of the EKS managed node group."
  type        = list(string)
  default     = ["m6i.2xlarge"]
}

# --- Azure (cloud = "aks") ---

variable "aks_subscription_id" {
  description = "Azure subscription that hosts the cluster (required for aks)."
  type        = string
  default     = null

  validation {
    condition     = var.cloud != "aks" || var.aks_subscription_id != null
    error_message = "aks_subscription_id is required when cloud is aks."
  }
}

variable "aks_vm_size" {
  description = "VM size of the AKS node pool."
  type        = string
  default     = "Standard_D8s_v5"
}

variable "aks_zones" {
  description = "Availability zones of the AKS node pool (empty in regions without zones)."
  type        = list(string)
  default     = ["1", "2", "3"]
}
