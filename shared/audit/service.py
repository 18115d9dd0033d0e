"""The append-only, hash-chained audit log (one chain per org)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.kernel.db.database import Database, Row, Tx
from shared.kernel.ids import new_id

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """The canonical form the chain hashes: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """Each entry commits to its predecessor's hash and to its own content."""
    body = {k: entry[k] for k in ("org_id", "seq", "id", "occurred_at", "actor", "action", "target", "details")}
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """What ``verify`` found: ok, how many entries it checked, and the first break."""

    ok: bool
    checked: int
    head_seq: int
    first_broken_seq: int | None = None
    problem: str | None = None


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


# One statement appends at the head of the org's chain: lock the head row (serialising appends
# per org without blocking other orgs), number and hash the entry as ``entry_hash`` does
# (sha256 of the previous hash and the canonical JSON, in UTF-8), move the head, insert the entry.
# Every org has a head from its creation (migration 0008); for an org_id without one the entry's
# seq is NULL and the insert fails (NOT NULL) rather than losing the entry. Parameters: the org,
# the canonical JSON before and after seq, the org (head), then the entry's columns.
_APPEND = """
WITH head AS (SELECT seq, hash FROM audit_heads WHERE org_id = %s FOR UPDATE),
entry AS (SELECT head.seq + 1 AS seq, head.hash AS prev_hash,
                 encode(sha256(convert_to(head.hash || %s || (head.seq + 1)::text || %s, 'UTF8')), 'hex') AS hash
          FROM head),
moved AS (UPDATE audit_heads h SET seq = entry.seq, hash = entry.hash FROM entry WHERE h.org_id = %s)
INSERT INTO audit_log (org_id, seq, id, occurred_at, actor, action, target, details, prev_hash, hash)
SELECT %s, entry.seq, %s, %s, %s, %s, %s, %s::jsonb, entry.prev_hash, entry.hash
FROM (SELECT) AS always LEFT JOIN entry ON true
"""


class AuditLog:
    """Appends inside the caller's transaction, so an action and its entry commit together."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, tx: Tx, *, org_id: str, actor: str, action: str, target: str,
               details: dict[str, Any] | None = None) -> str:
        """Add one entry at the head of ``org_id``'s chain; returns its id.

        One statement, held back (``Tx.defer``) until the transaction's next statement or its
        commit: an action and its entry still commit or roll back together.
        """
        entry_id = new_id("aud")
        occurred_at = datetime.now(UTC).isoformat(timespec="microseconds")
        # Hash exactly what jsonb gives back, so that verify, reading the row, agrees.
        stored = as_jsonb_returns(json.loads(canonical_json(details or {})))
        details_json = canonical_json(stored)
        prefix, suffix = around_seq({"org_id": org_id, "id": entry_id, "occurred_at": occurred_at, "actor": actor,
                                     "action": action, "target": target, "details": stored})
        tx.defer(_APPEND, org_id, prefix, suffix, org_id, org_id, entry_id, occurred_at, actor, action, target,
                 details_json)
        return entry_id

    def list(self, org_id: str, *, limit: int, after_seq: int | None = None, action: str | None = None,
             actor: str | None = None, target: str | None = None) -> list[Row]:
        """Entries newest first, filtered, strictly below ``after_seq`` when paging."""
        clauses: list[str] = ["org_id = %s"]
        args: list[object] = [org_id]
        for column, value in (("action", action), ("actor", actor), ("target", target)):
            if value is not None:
                clauses.append(f"{column} = %s")
                args.append(value)
        if after_seq is not None:
            clauses.append("seq < %s")
            args.append(after_seq)
        sql = (f"SELECT seq, id, occurred_at, actor, action, target, details, prev_hash, hash FROM audit_log "
               f"WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT %s")
        with self.db.read() as tx:
            return tx.fetch_all(sql, *args, limit)

    def verify(self, org_id: str) -> VerifyResult:
        """Recompute the chain; report the first entry that was edited, removed or moved."""
        prev, expected_seq, checked = GENESIS, 1, 0
        with self.db.transaction() as tx:
            head = tx.fetch_one("SELECT seq, hash FROM audit_heads WHERE org_id = %s", org_id)
            rows = tx.fetch_all("SELECT org_id, seq, id, occurred_at, actor, action, target, details, "
                                "prev_hash, hash FROM audit_log WHERE org_id = %s ORDER BY seq", org_id)
        head_seq = int(head["seq"]) if head else 0
        for row in rows:
            seq = int(row["seq"])
            if seq != expected_seq:
                return VerifyResult(False, checked, head_seq, expected_seq,
                                    f"entry {expected_seq} is missing (next present is {seq})")
            if row["prev_hash"] != prev:
                return VerifyResult(False, checked, head_seq, seq,
                                    f"entry {seq} does not follow entry {seq - 1} (deleted or reordered)")
            if entry_hash(prev, row) != row["hash"]:
                return VerifyResult(False, checked, head_seq, seq, f"entry {seq} was modified")
            prev, expected_seq, checked = row["hash"], seq + 1, checked + 1
        if head and (head_seq != checked or head["hash"] != prev):
            return VerifyResult(False, checked, head_seq, checked + 1,
                                f"the chain ends at entry {checked} but its head is entry {head_seq} "
                                "(trailing entries deleted)")
        return VerifyResult(True, checked, head_seq)
