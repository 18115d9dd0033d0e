-- The audit context's statements: the hash-chained log and the head of each org's chain
-- (shared/audit/service.py loads them with Queries("shared.audit")).

-- name: append_entry
-- One statement appends at the head of the org's chain: lock the head row (serialising appends
-- per org without blocking other orgs), number and hash the entry as ``entry_hash`` does
-- (sha256 of the previous hash and the canonical JSON, in UTF-8), move the head, insert the entry.
-- Every org has a head from its creation (migration 0008); for an org_id without one the entry's
-- seq is NULL and the insert fails (NOT NULL) rather than losing the entry. Parameters: the org,
-- the canonical JSON before and after seq, the org (head), then the entry's columns.
WITH head AS (SELECT seq, hash FROM audit_heads WHERE org_id = %s FOR UPDATE),
entry AS (SELECT head.seq + 1 AS seq, head.hash AS prev_hash,
                 encode(sha256(convert_to(head.hash || %s || (head.seq + 1)::text || %s, 'UTF8')), 'hex') AS hash
          FROM head),
moved AS (UPDATE audit_heads h SET seq = entry.seq, hash = entry.hash FROM entry WHERE h.org_id = %s)
INSERT INTO audit_log (org_id, seq, id, occurred_at, actor, action, target, details, prev_hash, hash)
SELECT %s, entry.seq, %s, %s, %s, %s, %s, %s::jsonb, entry.prev_hash, entry.hash
FROM (SELECT) AS always LEFT JOIN entry ON true;

-- name: entries_page
-- The org's entries newest first, each filter applied when given (action, actor, target: NULL
-- for any), strictly below the cursor's seq. The bound is COALESCE'd rather than "IS NULL OR"
-- so that it stays a condition on the primary key's index however the plan is cached.
-- Parameters: the org, action twice, actor twice, target twice, the cursor's seq (NULL for the
-- first page), the limit.
SELECT seq, id, occurred_at, actor, action, target, details, prev_hash, hash FROM audit_log
WHERE org_id = %s
  AND (%s::text IS NULL OR action = %s)
  AND (%s::text IS NULL OR actor = %s)
  AND (%s::text IS NULL OR target = %s)
  AND seq < COALESCE(%s::bigint, 9223372036854775807)
ORDER BY seq DESC LIMIT %s;

-- name: head_of_chain
-- Where the org's chain ends (its last seq and hash).
SELECT seq, hash FROM audit_heads WHERE org_id = %s;

-- name: whole_chain
-- Every entry of the org's chain, in order, to recompute it.
SELECT org_id, seq, id, occurred_at, actor, action, target, details, prev_hash, hash FROM audit_log
WHERE org_id = %s ORDER BY seq;
