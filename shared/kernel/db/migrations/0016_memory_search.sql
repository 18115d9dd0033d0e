-- Memory (issue 17): searches scan one org's rows exactly; HNSW only per large org.
--
-- Every memory search names one org, one level and one embedder. With one global HNSW index every
-- write paid an HNSW insertion into a graph of every org's vectors (the benchmark's writes were
-- bounded by it, 1.4x LangGraph's PostgresStore, which pays the same), while a search of an org
-- holding a few thousand memories is answered faster and exactly by reading that org's rows
-- (memories_org_level_idx) and computing the distances. So: no global vector index; an org that grows
-- past a threshold gets its own partial HNSW index (PgVectorStore.index_large_orgs, run by the
-- memory GC job), which its searches use (custom plans, iterative scans: see queries.sql).
--
-- Vectors are stored as halfvec (16-bit floats): a row's vector takes 768 bytes instead of 1,536,
-- so an exact scan reads half the pages (the table halves: 195 -> 98 MB at 100k memories) and
-- search p50 goes from ~5.6 to ~3.0 ms for 5,000 rows. The top 10 were the same as with 32-bit
-- vectors on the benchmark's data (similarities differ by ~1e-3; MiniLM's vectors are unit vectors
-- with components far inside half precision's range).
DROP INDEX IF EXISTS memories_embedding_idx;
ALTER TABLE memories ALTER COLUMN embedding TYPE halfvec(384) USING embedding::halfvec(384);
