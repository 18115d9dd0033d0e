"""The org's audit log and its verification."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.operation import ADMIN, Call, operation
from shared.kernel.pagination import Page, decode_cursor, encode_cursor


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=512)
    action: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=200)
    target: str | None = Field(default=None, max_length=200)


class AuditEntry(BaseModel):
    seq: int
    id: str
    occurred_at: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    head_seq: int
    first_broken_seq: int | None = None
    problem: str | None = None


@operation("GET", "/orgs/{org_id}/audit", summary="List audit entries", tags=["audit"], roles=ADMIN,
           query=AuditQuery, response=Page[AuditEntry])
def list_audit(call: Call) -> Page[AuditEntry]:
    q = call.query
    after = decode_cursor(q.cursor, required=("seq",))
    rows = call.services.audit.list(call.org_id, limit=q.limit + 1, after_seq=int(after["seq"]) if after else None,
                                    action=q.action, actor=q.actor, target=q.target)
    items = [AuditEntry(**r) for r in rows[: q.limit]]
    cursor = encode_cursor({"seq": items[-1].seq}) if len(rows) > q.limit else None
    return Page[AuditEntry](items=items, next_cursor=cursor)


@operation("GET", "/orgs/{org_id}/audit/verify", summary="Verify the audit chain", tags=["audit"], roles=ADMIN,
           response=VerifyOut)
def verify_audit(call: Call) -> VerifyOut:
    return VerifyOut(**vars(call.services.audit.verify(call.org_id)))
