"""The deployments context's public API: other contexts, operations and the data plane import from here only."""

from shared.deployments.job_launcher import JobLauncher
from shared.deployments.models import (
    ConsentRequest,
    DeploymentOut,
    DeploymentStatus,
    InstalledSpan,
    InstallOut,
    InstallRequest,
    RegisterOut,
    RegisterRequest,
    RunnableDeployment,
    UpgradeRequest,
)
from shared.deployments.ports import Provisioner
from shared.deployments.service import (
    HEARTBEAT_INTERVAL_SECONDS,
    BundleFile,
    DeploymentService,
    PendingRunnableDeployment,
)

__all__ = [
    "HEARTBEAT_INTERVAL_SECONDS",
    "BundleFile",
    "ConsentRequest",
    "DeploymentOut",
    "DeploymentService",
    "DeploymentStatus",
    "InstallOut",
    "InstallRequest",
    "InstalledSpan",
    "JobLauncher",
    "PendingRunnableDeployment",
    "Provisioner",
    "RegisterOut",
    "RegisterRequest",
    "RunnableDeployment",
    "UpgradeRequest",
]
