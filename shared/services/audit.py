"""The append-only, hash-chained audit log (one chain per org)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.db.database import Database, Row, Tx
from shared.ids import new_id

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


_LOCK_HEAD = "SELECT seq, hash FROM audit_heads WHERE org_id = %s FOR UPDATE"


class AuditLog:
    """Appends inside the caller's transaction, so an action and its entry commit together."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, tx: Tx, *, org_id: str, actor: str, action: str, target: str,
               details: dict[str, Any] | None = None) -> str:
        """Add one entry at the head of ``org_id``'s chain; returns its id."""
        # Row lock on the head serialises appends per org without blocking other orgs. The head
        # exists after an org's first entry: only then is it created (idempotently, as two first
        # appends may race), so a steady-state append is two statements.
        head = tx.fetch_one(_LOCK_HEAD, org_id)
        if head is None:
            tx.execute("INSERT INTO audit_heads (org_id, seq, hash) VALUES (%s, 0, %s) "
                       "ON CONFLICT (org_id) DO NOTHING", org_id, GENESIS)
            head = tx.fetch_one(_LOCK_HEAD, org_id)
        assert head is not None
        entry = {
            "org_id": org_id,
            "seq": int(head["seq"]) + 1,
            "id": new_id("aud"),
            "occurred_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            # Round-trip through JSON so what is hashed is exactly what jsonb gives back.
            "details": json.loads(canonical_json(details or {})),
        }
        digest = entry_hash(head["hash"], entry)
        # The entry and the new head in one statement.
        tx.execute(
            "WITH head AS (UPDATE audit_heads SET seq = %s, hash = %s WHERE org_id = %s) "
            "INSERT INTO audit_log (org_id, seq, id, occurred_at, actor, action, target, details, prev_hash, hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)",
            entry["seq"], digest, org_id,
            org_id, entry["seq"], entry["id"], entry["occurred_at"], actor, action, target,
            canonical_json(entry["details"]), head["hash"], digest,
        )
        return str(entry["id"])

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
