"""The local stand-in for an org's cloud: the ``cloud_resources`` table (seeded from the org's
FOCUS billing data), which the org reads through ``GET /orgs/{org_id}/cloud-resources``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.approvals.ports import ResourceActionError, ResourceOutcome
from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries

_Q = Queries("shared.approvals")


class LocalInventory:
    """``CloudResources`` over the inventory table; every action is one transaction, idempotent."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _apply(self, org_id: str, resource_id: str, action: str, *, state: str | None,
               machine_type: str | None) -> ResourceOutcome:
        with self.db.transaction() as tx:
            row = tx.fetch_one(_Q.resource_for_update, org_id, resource_id)
            if row is None:
                raise ResourceActionError(f"no resource {resource_id} in the org's inventory")
            new_state = state or row["state"]
            new_type = machine_type or row["machine_type"]
            line = {"action": action, "at": datetime.now(UTC).isoformat(), "from_state": row["state"],
                    "to_state": new_state, "from_machine_type": row["machine_type"], "to_machine_type": new_type}
            tx.execute(_Q.set_resource_state, new_state, new_type, json.dumps(line), org_id, resource_id)
        return ResourceOutcome(resource_id=resource_id, state=new_state, previous_state=row["state"],
                               machine_type=new_type, previous_machine_type=row["machine_type"], cloud="local")

    def stop(self, org_id: str, resource_id: str) -> ResourceOutcome:
        """Mark the resource stopped."""
        return self._apply(org_id, resource_id, "stop", state="stopped", machine_type=None)

    def resize(self, org_id: str, resource_id: str, machine_type: str) -> ResourceOutcome:
        """Record the new machine type."""
        return self._apply(org_id, resource_id, "resize", state=None, machine_type=machine_type)
