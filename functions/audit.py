"""The org's audit log and its verification."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from functions.operation import ADMIN, Call, operation
from shared.audit import AuditEntry, VerifyOut
from shared.kernel.pagination import Page


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)
    action: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=200)
    target: str | None = Field(default=None, max_length=200)


@operation("GET", "/orgs/{org_id}/audit", summary="List audit entries", tags=["audit"], roles=ADMIN,
           query=AuditQuery, response=Page[AuditEntry])
def list_audit(call: Call) -> Page[AuditEntry]:
    q = call.query
    return call.services.audit.page(call.org_id, limit=q.limit, cursor=q.cursor, action=q.action, actor=q.actor,
                                    target=q.target)


@operation("GET", "/orgs/{org_id}/audit/verify", summary="Verify the audit chain", tags=["audit"], roles=ADMIN,
           response=VerifyOut)
def verify_audit(call: Call) -> VerifyOut:
    return call.services.audit.verify(call.org_id)
