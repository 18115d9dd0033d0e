-- The catalog search's statements (see search.py and docs/REGISTRY.md; timed by bench/catalog.py).
-- Templates (marked so) double the braces of their SQL.

-- name: plan_each_search
-- Plan every search for its own words and filters: a cached generic plan cannot know how many
-- listings a word matches, and picks a plan that is far slower for common words sorted by
-- installs or rating (measured in bench/catalog.py). It also lets the planner drop the unused
-- optional conditions of the search below, whose values it then sees.
SET LOCAL plan_cache_mode = force_custom_plan;

-- name: typo_expansions
-- Nearest catalog words of each query word missing from the catalog, from the GiST index
-- (distance = 1 - similarity), kept above the similarity threshold.
SELECT t.word, c.term
FROM unnest(%s::text[]) AS t(word)
CROSS JOIN LATERAL (
    SELECT term, similarity(term, t.word) AS sim FROM catalog_terms ORDER BY term <-> t.word LIMIT %s
) c
WHERE c.sim >= %s AND NOT EXISTS (SELECT 1 FROM catalog_terms e WHERE e.term = t.word)
ORDER BY t.word, c.sim DESC, c.term;

-- name: search
-- One page of approved listings. The inner query filters and computes the relevance score; the
-- outer one applies the keyset, the order and the limit on the raw sort columns, then renders
-- the page's rows. PostgreSQL flattens the two, so the partial sort indexes still serve plain sorts.
-- Every optional condition reads "(value IS NULL OR condition)" and the search is planned for its
-- values (plan_each_search), so the planner keeps only the conditions that apply; without a text
-- query, to_tsquery(NULL) is NULL and so is the score.
-- Parameters: rank weights, tsquery text, category x2, pricing model x2, deployment type x2,
-- minimum rating x2, cursor id, cursor sort values, cursor id, limit.
-- Template: {sort_columns} ("s.rating_avg, s.rating_count"), {sort_values} ("%s::numeric,
-- %s::integer") and {order} ("s.rating_avg DESC, s.rating_count DESC") come from the fixed sort
-- keys in search.py.
SELECT s.id, s.name, s.publisher_org_id, s.publisher_name, s.display_name, s.description, s.category,
       to_json(s.tags) AS tags, s.pricing_model, s.pricing, to_json(s.deployment_types) AS deployment_types,
       s.install_count, s.rating_avg, s.rating_count, s.status, s.status_reason, s.latest_version,
       to_json(s.created_at) #>> '{{}}' AS created_at, to_json(s.updated_at) #>> '{{}}' AS updated_at,
       to_json(s.published_at) #>> '{{}}' AS published_at, s.score
FROM (
    SELECT a.*, ts_rank(%s::float4[], a.search_doc, q.tsq)::float8 AS score
    FROM agents a, to_tsquery('english', %s) AS q(tsq)
    WHERE a.status = 'approved'
      AND (q.tsq IS NULL OR a.search_doc @@ q.tsq)
      AND (%s::text IS NULL OR a.category = %s)
      AND (%s::text IS NULL OR a.pricing_model = %s)
      AND (%s::text IS NULL OR a.deployment_types @> ARRAY[%s]::text[])
      AND (%s::numeric IS NULL OR a.rating_avg >= %s)
) s
WHERE (%s::text IS NULL OR ({sort_columns}, s.id) < ({sort_values}, %s))
ORDER BY {order}, s.id DESC
LIMIT %s;

-- name: explain
-- The plan of one of the statements above, for the benchmark.
-- Template: {statement} is that statement.
EXPLAIN (ANALYZE, BUFFERS) {statement};
