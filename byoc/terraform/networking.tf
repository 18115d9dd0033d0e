# Cluster networks: private nodes in their own VPC / VNet, outbound-only internet access (the data
# plane polls the control plane over HTTPS; nothing needs to reach it from outside).
#
# Address plan inside var.network_cidr (a /16 by default):
#   first /20   nodes (all clouds), then services /20 (gke); pods /18 at offset 1 (gke)
#   /20s 0-2    private subnets (eks), /24s 240-242 public subnets for the NAT gateway (eks)

# --- GKE ---

resource "google_compute_network" "gke" {
  count                   = local.gke
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "gke" {
  count                    = local.gke
  name                     = "${var.name}-nodes"
  network                  = google_compute_network.gke[0].id
  region                   = local.region
  ip_cidr_range            = cidrsubnet(var.network_cidr, 4, 0)
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = cidrsubnet(var.network_cidr, 4, 1)
  }

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = cidrsubnet(var.network_cidr, 2, 1)
  }

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "gke" {
  count   = local.gke
  name    = "${var.name}-router"
  network = google_compute_network.gke[0].id
  region  = local.region
}

# Private nodes reach the control plane and image registries through Cloud NAT.
resource "google_compute_router_nat" "gke" {
  count                              = local.gke
  name                               = "${var.name}-nat"
  router                             = google_compute_router.gke[0].name
  region                             = local.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# --- EKS ---

data "aws_availability_zones" "eks" {
  count = local.eks
  state = "available"
}

resource "aws_vpc" "eks" {
  count                = local.eks
  cidr_block           = var.network_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = var.name
  }
}

# No rules: nothing uses the VPC's default security group.
resource "aws_default_security_group" "eks" {
  count  = local.eks
  vpc_id = aws_vpc.eks[0].id
}

resource "aws_subnet" "eks_private" {
  for_each          = local.eks == 1 ? toset(["0", "1", "2"]) : toset([])
  vpc_id            = aws_vpc.eks[0].id
  cidr_block        = cidrsubnet(var.network_cidr, 4, tonumber(each.key))
  availability_zone = data.aws_availability_zones.eks[0].names[tonumber(each.key)]

  tags = {
    Name                              = "${var.name}-private-${each.key}"
    "kubernetes.io/role/internal-elb" = "1"
  }
}

resource "aws_subnet" "eks_public" {
  for_each                = local.eks == 1 ? toset(["0", "1", "2"]) : toset([])
  vpc_id                  = aws_vpc.eks[0].id
  cidr_block              = cidrsubnet(var.network_cidr, 8, 240 + tonumber(each.key))
  availability_zone       = data.aws_availability_zones.eks[0].names[tonumber(each.key)]
  map_public_ip_on_launch = false

  tags = {
    Name                     = "${var.name}-public-${each.key}"
    "kubernetes.io/role/elb" = "1"
  }
}

resource "aws_internet_gateway" "eks" {
  count  = local.eks
  vpc_id = aws_vpc.eks[0].id
}

resource "aws_eip" "eks_nat" {
  count  = local.eks
  domain = "vpc"
}

resource "aws_nat_gateway" "eks" {
  count         = local.eks
  allocation_id = aws_eip.eks_nat[0].id
  subnet_id     = aws_subnet.eks_public["0"].id
  depends_on    = [aws_internet_gateway.eks]
}

resource "aws_route_table" "eks_public" {
  count  = local.eks
  vpc_id = aws_vpc.eks[0].id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.eks[0].id
  }
}

resource "aws_route_table_association" "eks_public" {
  for_each       = aws_subnet.eks_public
  subnet_id      = each.value.id
  route_table_id = aws_route_table.eks_public[0].id
}

resource "aws_route_table" "eks_private" {
  count  = local.eks
  vpc_id = aws_vpc.eks[0].id

  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.eks[0].id
  }
}

resource "aws_route_table_association" "eks_private" {
  for_each       = aws_subnet.eks_private
  subnet_id      = each.value.id
  route_table_id = aws_route_table.eks_private[0].id
}

# --- AKS ---

resource "azurerm_virtual_network" "aks" {
  count               = local.aks
  name                = "${var.name}-vnet"
  location            = azurerm_resource_group.aks[0].location
  resource_group_name = azurerm_resource_group.aks[0].name
  address_space       = [var.network_cidr]
  tags                = local.labels
}

resource "azurerm_subnet" "aks_nodes" {
  count                = local.aks
  name                 = "nodes"
  resource_group_name  = azurerm_resource_group.aks[0].name
  virtual_network_name = azurerm_virtual_network.aks[0].name
  address_prefixes     = [cidrsubnet(var.network_cidr, 4, 0)]
  service_endpoints    = ["Microsoft.Storage"]
}
