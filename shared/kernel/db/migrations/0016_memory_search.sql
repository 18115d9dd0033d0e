-- Memory (issue 17): searches scan one org's rows exactly; HNSW only per large org.
--
-- Every memory search names one org, one level and one embedder. With one global HNSW index every
-- write paid an HNSW insertion into a graph of every org's vectors (the benchmark's writes were
-- bounded by it, 1.4x LangGraph's PostgresStore, which pays the same), while a search of an org
-- holding a few thousand memories is answered faster and exactly by reading that org's rows
-- (memories_org_level_idx) and computing the distances. So: no global vector index; an org that grows
-- past a threshold gets its own partial HNSW index (PgVectorStore.index_large_orgs, run by the
-- memory GC job), which its searches use (custom plans, iterative scans: see queries.sql).
DROP INDEX IF EXISTS memories_embedding_idx;
