-- The memory context's statements (Levels 2-4 in the memories table; see 0014_memory.sql).
-- shared/memory/adapters/pgvector_store.py loads them with Queries("shared.memory"). Every
-- statement runs after enter_org, as the marketplace_memory role under row-level security, and
-- still names its org itself (two walls).

-- name: enter_org
-- Become the RLS-bound role and name the org for the rest of this transaction (SET LOCAL all).
-- Custom plans: the org is then a constant to the planner, so a large org's partial HNSW index
-- (WHERE org_id = '...', see index_large_orgs) is chosen for its searches; a small org's rows are
-- read through the btree and compared exactly. Iterative scans (pgvector >= 0.8): when the level,
-- embedder and expiry filters drop HNSW candidates, the scan goes on until k rows are found.
-- Parameters: org id, HNSW ef_search.
SELECT set_config('role', 'marketplace_memory', true), set_config('marketplace.memory_org', %s, true),
       set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'strict_order', true),
       set_config('plan_cache_mode', 'force_custom_plan', true);

-- name: insert_memories
-- A batch of memories in one statement: one JSON array of rows (vectors as '[x,y,...]' text).
INSERT INTO memories (id, org_id, level, namespace, subjects, content, metadata, embedder, embedding,
                      created_at, expires_at)
SELECT r.id, r.org_id, r.level, r.namespace, r.subjects, r.content, r.metadata, r.embedder, r.embedding::halfvec,
       r.created_at, r.expires_at
FROM jsonb_to_recordset(%s::jsonb) AS r(id text, org_id text, level smallint, namespace text, subjects text[],
                                         content text, metadata jsonb, embedder text, embedding text,
                                         created_at timestamptz, expires_at timestamptz);

-- name: search
-- The nearest live memories of one org and level (and namespace), by cosine similarity, with the
-- current embedder only. An expired row is never returned, whether or not the GC has run.
-- The distance is computed once per row (ordering by the output column; the pathkey is still
-- `embedding <=> query`, which an org's HNSW index serves).
-- Parameters: query vector, org, level, namespace (or NULL), embedder, now, k.
SELECT id, org_id, level, namespace, subjects, content, metadata, embedder, created_at, expires_at,
       1 - distance AS similarity
FROM (SELECT id, org_id, level, namespace, subjects, content, metadata, embedder, created_at, expires_at,
             embedding <=> %s::halfvec AS distance
      FROM memories
      WHERE org_id = %s AND level = %s AND (namespace = %s OR %s::text IS NULL) AND embedder = %s
        AND (expires_at IS NULL OR expires_at > %s)
      ORDER BY distance LIMIT %s) AS nearest
ORDER BY distance;

-- name: by_id
SELECT id, org_id, level, namespace, subjects, content, metadata, embedder, created_at, expires_at,
       NULL::float8 AS similarity
FROM memories WHERE org_id = %s AND id = %s AND (expires_at IS NULL OR expires_at > %s);

-- name: recent
-- The newest live memories of one org and level (recency, without a query).
-- Parameters: org, level, now, limit.
SELECT id, org_id, level, namespace, subjects, content, metadata, embedder, created_at, expires_at,
       NULL::float8 AS similarity
FROM memories WHERE org_id = %s AND level = %s AND (expires_at IS NULL OR expires_at > %s)
ORDER BY created_at DESC LIMIT %s;

-- name: delete_memory
DELETE FROM memories WHERE org_id = %s AND id = %s RETURNING level;

-- name: forget_subject
-- Delete every memory of the org that names the subject; returns how many per level.
WITH gone AS (DELETE FROM memories WHERE org_id = %s AND subjects @> ARRAY[%s]::text[] RETURNING level)
SELECT level, count(*) AS n FROM gone GROUP BY level;

-- name: gc_expired
-- Delete up to a batch of expired memories of any org (the GC: the platform's job across orgs, run as the
-- table's owner, not as the RLS-bound role). SKIP LOCKED: concurrent runs take different rows.
-- Parameters: now, batch.
DELETE FROM memories WHERE id IN (
    SELECT id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= %s
    ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING org_id, level;

-- name: stale_embedder
-- A batch of the org's memories embedded by another embedder than the current one (re-embed job).
SELECT id, content FROM memories WHERE org_id = %s AND embedder <> %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED;

-- name: orgs_with_stale_embedder
-- Orgs with memories of another embedder (runs as the owner: the platform's job).
SELECT DISTINCT org_id FROM memories WHERE embedder <> %s;

-- name: reembed
UPDATE memories SET embedder = %s, embedding = %s::halfvec WHERE org_id = %s AND id = %s;

-- name: without_org
-- Only for the fail-closed test and tools: a count that names no org (RLS must refuse it).
SELECT count(*) AS n FROM memories;

-- name: large_orgs
-- Orgs with at least N memories, and whether a valid partial HNSW index of theirs exists (the
-- platform's job, run as the table's owner). Parameters: N.
SELECT m.org_id, count(*) AS n,
       EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = 'memories_hnsw_' || left(md5(m.org_id), 20) AND i.indisvalid) AS indexed
FROM memories m GROUP BY m.org_id HAVING count(*) >= %s;

-- name: drop_org_index
-- The HNSW index of one org, before it is built again (a failed CONCURRENTLY build leaves an
-- invalid one). A template: {index} is the index's identifier (org_index_name).
DROP INDEX CONCURRENTLY IF EXISTS {index};

-- name: create_org_index
-- One org's partial HNSW index. A template: {index} the index's identifier, {m} and
-- {ef_construction} the build's literals, {org_id} the org's literal (DDL takes no parameters).
CREATE INDEX CONCURRENTLY {index} ON memories USING hnsw (embedding halfvec_cosine_ops)
WITH (m = {m}, ef_construction = {ef_construction}) WHERE org_id = {org_id};

-- name: analyze_memories
-- Fresh statistics after new indexes, so the planner weighs them with current counts.
ANALYZE memories;
