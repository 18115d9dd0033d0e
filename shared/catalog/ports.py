"""What the catalog needs from contexts above it, as small interfaces the composition root fills."""

from __future__ import annotations

from typing import Protocol

from shared.kernel.db.statements import Statements


class InstallHistory(Protocol):
    """Which orgs have used which agents (the deployments context owns the answer)."""

    def has_installed(self, tx: Statements, org_id: str, agent_id: str) -> bool:
        """Has ``org_id`` ever installed the agent, in the caller's transaction? Uninstalled
        deployments count (the org used the agent and may say why it left); failed ones do not
        (it never ran)."""
        ...
