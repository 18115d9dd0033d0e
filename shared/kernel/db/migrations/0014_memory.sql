-- Memory (issue 17): Levels 2 (task summaries), 3 (knowledge) and 4 (episodes) in ONE table with a
-- level column (Level 1 is the LangGraph state, Level 5 the org's preferences in org_preferences).
-- One table: one HNSW index, one row-level security policy, one GC statement; the level is a
-- filter. Each row records the embedder that made its vector; a search compares only vectors of
-- the current embedder (spaces never mix) and the re-embed job moves rows to a new one.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE memories (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    level       smallint NOT NULL CHECK (level IN (2, 3, 4)),
    namespace   text CHECK ((level = 3) = (namespace IS NOT NULL)),
    subjects    text[] NOT NULL DEFAULT '{}',
    content     text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    embedder    text NOT NULL,
    embedding   vector(384) NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz
);
CREATE INDEX memories_embedding_idx ON memories USING hnsw (embedding vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);
CREATE INDEX memories_org_level_idx ON memories (org_id, level, created_at DESC);
CREATE INDEX memories_subjects_idx ON memories USING gin (subjects);
CREATE INDEX memories_expiry_idx ON memories (expires_at) WHERE expires_at IS NOT NULL;

-- The org a memory statement works for: the transaction's setting marketplace.memory_org. Unset
-- (a query that forgot its org) is an error, not an empty answer: fail closed, loudly.
CREATE FUNCTION memory_org() RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE org text := current_setting('marketplace.memory_org', true);
BEGIN
    IF org IS NULL OR org = '' THEN
        RAISE EXCEPTION 'memory query without an org' USING ERRCODE = '42501';
    END IF;
    RETURN org;
END $$;

-- Row-level security, the second wall behind the org filter every statement carries. Superusers
-- and the table's owner bypass RLS, so every org's memory statement runs as this role (SET LOCAL
-- ROLE in its transaction; the connecting user is made a member of it). Only the platform's own
-- jobs (the GC, the re-embed job's scan of orgs) run as the owner, across orgs.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketplace_memory') THEN
        CREATE ROLE marketplace_memory NOLOGIN;
    END IF;
    EXECUTE format('GRANT marketplace_memory TO %I', current_user);
END $$;
GRANT SELECT, INSERT, UPDATE, DELETE ON memories TO marketplace_memory;
GRANT EXECUTE ON FUNCTION memory_org() TO marketplace_memory;
ALTER TABLE memories ENABLE ROW LEVEL SECURITY;
CREATE POLICY memories_by_org ON memories TO marketplace_memory USING (org_id = memory_org()) WITH CHECK (org_id = memory_org());
