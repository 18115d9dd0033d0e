"""The append-only, hash-chained audit log (one chain per org)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from shared.audit.models import AuditEntry, VerifyOut
from shared.kernel.db.database import Database, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.ids import new_id
from shared.kernel.pagination import BySeq, Page, next_page
from shared.kernel.redaction import redact

GENESIS = "0" * 64
_Q = Queries("shared.audit")


def canonical_json(value: Any) -> str:
    """The canonical form the chain hashes: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """Each entry commits to its predecessor's hash and to its own content."""
    body = {k: entry[k] for k in ("org_id", "seq", "id", "occurred_at", "actor", "action", "target", "details")}
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


def as_jsonb_returns(value: Any) -> Any:
    """``value`` as it comes back from a jsonb column: jsonb keeps numbers as decimals, so a float
    Python writes in exponent form (``1e+16``: every such float is whole) returns as an integer,
    and ``-0.0`` as ``0.0``."""
    if isinstance(value, float):
        if value == 0:
            return 0.0
        return int(value) if "e+" in repr(value) else value
    if isinstance(value, dict):
        return {k: as_jsonb_returns(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_jsonb_returns(v) for v in value]
    return value


def around_seq(body: dict[str, Any]) -> tuple[str, str]:
    """The canonical JSON of an entry split where its ``seq`` goes: ``prefix + str(seq) + suffix``
    is ``canonical_json`` of the entry with that ``seq``.

    Sorted, the top-level keys end with ``seq`` then ``target`` (a string, whose quotes JSON
    escapes), so the last ``,"seq":0,"target":`` is the top-level one even when ``details``
    holds keys of those names.
    """
    text = canonical_json({**body, "seq": 0})
    head, sep, tail = text.rpartition(',"seq":0,"target":')
    if not sep:
        raise ValueError("an audit entry needs a seq and a target")
    return head + ',"seq":', ',"target":' + tail


class AuditLog:
    """Appends inside the caller's transaction, so an action and its entry commit together."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, tx: Tx, *, org_id: str, actor: str, action: str, target: str,
               details: dict[str, Any] | None = None) -> str:
        """Add one entry at the head of ``org_id``'s chain; returns its id.

        One statement (``append_entry`` in queries.sql), held back (``Tx.defer``) until the
        transaction's next statement or its commit: an action and its entry still commit or roll
        back together.
        """
        entry_id = new_id("aud")
        occurred_at = datetime.now(UTC).isoformat(timespec="microseconds")
        # No secret in the audit log, whoever passed it in (shared/kernel/redaction.py); hash
        # exactly what jsonb gives back, so that verify, reading the row, agrees.
        stored = as_jsonb_returns(json.loads(canonical_json(redact(details or {}))))
        details_json = canonical_json(stored)
        prefix, suffix = around_seq({"org_id": org_id, "id": entry_id, "occurred_at": occurred_at, "actor": actor,
                                     "action": action, "target": target, "details": stored})
        tx.defer(_Q.append_entry, org_id, prefix, suffix, org_id, org_id, entry_id, occurred_at, actor, action, target,
                 details_json)
        return entry_id

    def page(self, org_id: str, *, limit: int, cursor: str | None = None, action: str | None = None,
             actor: str | None = None, target: str | None = None) -> Page[AuditEntry]:
        """Entries newest first, filtered by whichever of action, actor and target are given."""
        after = BySeq.after(cursor)
        with self.db.read() as tx:
            rows = tx.fetch_all(_Q.entries_page, org_id, action, action, actor, actor, target, target, *after.params,
                                limit + 1)
        items, next_cursor = next_page([AuditEntry(**row) for row in rows], limit, lambda e: BySeq.of(e.seq))
        return Page[AuditEntry](items=items, next_cursor=next_cursor)

    def verify(self, org_id: str) -> VerifyOut:
        """Recompute the chain; report the first entry that was edited, removed or moved."""
        prev, expected_seq, checked = GENESIS, 1, 0
        with self.db.transaction() as tx:
            head = tx.fetch_one(_Q.head_of_chain, org_id)
            rows = tx.fetch_all(_Q.whole_chain, org_id)
        head_seq = int(head["seq"]) if head else 0

        def broken(at: int, problem: str) -> VerifyOut:
            return VerifyOut(ok=False, checked=checked, head_seq=head_seq, first_broken_seq=at, problem=problem)

        for row in rows:
            seq = int(row["seq"])
            if seq != expected_seq:
                return broken(expected_seq, f"entry {expected_seq} is missing (next present is {seq})")
            if row["prev_hash"] != prev:
                return broken(seq, f"entry {seq} does not follow entry {seq - 1} (deleted or reordered)")
            if entry_hash(prev, row) != row["hash"]:
                return broken(seq, f"entry {seq} was modified")
            prev, expected_seq, checked = row["hash"], seq + 1, checked + 1
        if head and (head_seq != checked or head["hash"] != prev):
            return broken(checked + 1, f"the chain ends at entry {checked} but its head is entry {head_seq} "
                                       "(trailing entries deleted)")
        return VerifyOut(ok=True, checked=checked, head_seq=head_seq)
