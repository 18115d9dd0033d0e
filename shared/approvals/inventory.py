"""The org's cloud-resource inventory (the local adapter's table): read it, seed it from FOCUS data."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from shared.approvals.models import ResourceOut
from shared.audit import AuditLog
from shared.identity import Principal
from shared.kernel.db.database import Database
from shared.kernel.db.queries import Queries
from shared.kernel.errors import Unprocessable
from shared.kernel.pagination import ByKey, Page, next_page

_Q = Queries("shared.approvals")
DAYS_PER_MONTH = Decimal(365) / Decimal(12)


@dataclass(frozen=True)
class FocusResource:
    """One resource as a FOCUS export describes it, with its monthly cost."""

    resource_id: str
    name: str | None
    service: str | None
    region: str | None
    resource_type: str | None
    monthly_cost_micros: int


def resources_of_focus(text: str) -> list[FocusResource]:
    """One resource per ``ResourceId`` of a FOCUS 1.0 CSV: its name, service, region, and its
    monthly cost (its billed cost over the days the data covers, scaled to a month), micro-dollars."""
    reader = csv.DictReader(io.StringIO(text))
    needed = {"ResourceId", "BilledCost", "ChargePeriodStart"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise Unprocessable("not a FOCUS 1.0 CSV", details=[
            {"path": "focus_csv", "message": f"needs the columns {', '.join(sorted(needed))}"}])
    cost: dict[str, Decimal] = defaultdict(Decimal)
    info: dict[str, dict[str, str | None]] = {}
    days: set[str] = set()
    for number, row in enumerate(reader, start=2):
        resource = (row.get("ResourceId") or "").strip()
        if not resource or resource == "NULL":
            continue
        try:
            cost[resource] += Decimal(row["BilledCost"] if row["BilledCost"] not in ("", "NULL") else "0")
            days.add(str(datetime.fromisoformat(row["ChargePeriodStart"]).date()))
        except (InvalidOperation, ValueError) as exc:
            raise Unprocessable("not a FOCUS 1.0 CSV", details=[
                {"path": f"focus_csv[{number}]", "message": str(exc)}]) from exc
        def value(name: str, source: dict[str, str] = row) -> str | None:
            found = (source.get(name) or "").strip()
            return None if found in ("", "NULL") else found[:200]
        info[resource] = {"name": value("ResourceName"), "service": value("ServiceName"),
                          "region": value("RegionId"), "resource_type": value("ResourceType")}
    span = Decimal(max(1, len(days)))
    return [FocusResource(resource_id=r[:500], **info[r],
                          monthly_cost_micros=int((cost[r] / span * DAYS_PER_MONTH * 1_000_000).to_integral_value()))
            for r in sorted(cost)]


class Inventory:
    """The org's resources as the local adapter holds them."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    def page(self, org_id: str, *, limit: int, cursor: str | None) -> Page[ResourceOut]:
        """Resources by resource id, ascending; a tampered cursor is a 400 ``invalid_cursor``."""
        after = ByKey.after(cursor)
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.resources_page, org_id, *after.params, limit + 1)
        items, next_cursor = next_page([ResourceOut(**r) for r in rows], limit, lambda r: ByKey.of(r.resource_id))
        return Page[ResourceOut](items=items, next_cursor=next_cursor)

    def import_focus(self, principal: Principal, org_id: str, text: str) -> Page[ResourceOut]:
        """Seed (or refresh) the inventory from FOCUS data; states already changed stay as they are."""
        resources = resources_of_focus(text)
        if len(resources) > 10_000:
            raise Unprocessable("at most 10000 resources per import", details=[
                {"path": "focus_csv", "message": "too many resources"}])
        with self.db.transaction() as tx:
            for r in resources:
                tx.execute(_Q.upsert_resource, org_id, r.resource_id, r.name, r.service, r.region, None,
                           r.monthly_cost_micros)
            self.audit.append(tx, org_id=org_id, actor=principal.actor, action="cloud_resources.imported",
                              target=org_id, details={"resources": len(resources)})
        return self.page(org_id, limit=200, cursor=None)
