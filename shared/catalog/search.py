"""Catalog search: full-text over approved listings, typo-tolerant, filtered, keyset-paginated.

Query words missing from the catalog are widened to their nearest catalog words by trigram
similarity (``catalog_terms``, GiST); the expansion travels in the cursor, so later pages run the
same query. Every search is planned for its own words (``plan_cache_mode = force_custom_plan``);
see docs/REGISTRY.md and the catalog figures in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.catalog.rows import cursor_value, listing_columns, listing_out
from shared.kernel.db.database import Database, Row, Tx
from shared.kernel.errors import BadRequest, ErrorCode, Unprocessable
from shared.kernel.pagination import decode_cursor, encode_cursor

# ts_rank weights for D, C, B, A: publisher name, description, tags+category, names.
RANK_WEIGHTS = [0.1, 0.2, 0.4, 1.0]
# Query words of this length or more that appear in no listing are widened to their nearest
# catalog words by trigram similarity (at least pg_trgm's default threshold, 0.3): one wrong
# letter in a word of five or more letters stays above it.
TYPO_MIN_LENGTH = 4
TYPO_SIMILARITY = 0.3
TYPO_ALTERNATIVES = 2
MAX_QUERY_WORDS = 8
_WORD = re.compile(r"[^\W_]+")
_TERM_MIN, _TERM_MAX = 3, 40


def catalog_words(*texts: str) -> list[str]:
    """The distinct lowercase words of ``texts`` worth suggesting as typo corrections, sorted."""
    words = {w for text in texts for w in _WORD.findall(text.lower()) if _TERM_MIN <= len(w) <= _TERM_MAX}
    return sorted(words)


def query_words(q: str) -> list[str]:
    """The words of a search query, in order, deduplicated, at most :data:`MAX_QUERY_WORDS`."""
    seen: list[str] = []
    for word in _WORD.findall(q.lower()):
        if word not in seen and len(word) <= _TERM_MAX:
            seen.append(word)
    return seen[:MAX_QUERY_WORDS]


def tsquery_text(groups: list[list[str]]) -> str:
    """``(cost) & (anomoly | anomaly)``: every group must match, any word of a group will do.

    Every word matches ``[^\\W_]+``, so the text cannot carry to_tsquery operators.
    """
    return " & ".join("(" + " | ".join(words) + ")" for words in groups)


@dataclass(frozen=True)
class CatalogSearch:
    """``GET /agents`` parameters, as the service takes them."""

    q: str | None = None
    category: str | None = None
    pricing_model: str | None = None
    deployment_type: str | None = None
    min_rating: Decimal | None = None
    sort: str | None = None
    limit: int = 20
    cursor: str | None = None


# Nearest catalog words of each query word missing from the catalog, from the GiST index
# (distance = 1 - similarity), kept above the similarity threshold.
_EXPAND_SQL = (
    "SELECT t.word, c.term FROM unnest(%s::text[]) AS t(word) CROSS JOIN LATERAL ("
    " SELECT term, similarity(term, t.word) AS sim FROM catalog_terms"
    " ORDER BY term <-> t.word LIMIT %s) c"
    " WHERE c.sim >= %s AND NOT EXISTS (SELECT 1 FROM catalog_terms e WHERE e.term = t.word)"
    " ORDER BY t.word, c.sim DESC, c.term")

# Sort keys: (SQL expression, SQL type for the cursor value); the listing id breaks ties.
_SORT_KEYS: dict[str, list[tuple[str, str]]] = {
    "relevance": [("score", "float8")],
    "rating": [("rating_avg", "numeric"), ("rating_count", "integer")],
    "installs": [("install_count", "bigint")],
    "newest": [("published_at", "timestamptz")],
}


class CatalogSearcher:
    """Runs searches of the public catalog (approved listings only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def search(self, params: CatalogSearch) -> tuple[list[Row], str | None]:
        """One page of approved listings matching ``params``, keyset-paginated on (sort key, id)."""
        words = query_words(params.q or "")
        sort = params.sort or ("relevance" if words else "installs")
        if sort == "relevance" and not words:
            raise Unprocessable("sort=relevance needs a search query q",
                                details=[{"path": "sort", "message": "relevance needs q"}])
        fingerprint = hashlib.sha256(json.dumps(
            [words, params.category, params.pricing_model, params.deployment_type,
             str(params.min_rating) if params.min_rating is not None else None, sort]).encode()).hexdigest()[:16]
        after = decode_cursor(params.cursor, required=("f", "k", "id"))
        if after is not None and after["f"] != fingerprint:
            raise BadRequest("the cursor belongs to a different query", code=ErrorCode.INVALID_CURSOR)

        with self.db.transaction() as tx:
            # Plan every search for its own words and filters: a cached generic plan cannot know
            # how many listings a word matches, and picks a plan that is far slower for common
            # words sorted by installs or rating (measured in bench/catalog.py).
            tx.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            groups: list[list[str]] | None = None
            if words:
                # The expanded words travel in the cursor: later pages use the same query even if
                # new listings have added words to the vocabulary meanwhile.
                groups = self._cursor_groups(after, len(words)) if after else self._expand(tx, words)
            rows = tx.fetch_all(*self._search_sql(params, sort, groups, after))
        items = rows[: params.limit]
        next_cursor = None
        if len(rows) > params.limit:
            last = items[-1]
            key = {"f": fingerprint, "k": [cursor_value(last[c]) for c, _ in _SORT_KEYS[sort]],
                   "id": last["id"]}
            if groups is not None:
                key["g"] = groups
            next_cursor = encode_cursor(key)
        return [{**listing_out(r), "score": r.get("score")} for r in items], next_cursor

    @staticmethod
    def _cursor_groups(after: dict[str, Any], expected: int) -> list[list[str]]:
        groups = after.get("g")
        if (not isinstance(groups, list) or len(groups) != expected or not all(
                isinstance(g, list) and 0 < len(g) <= 1 + TYPO_ALTERNATIVES
                and all(isinstance(w, str) and len(w) <= _TERM_MAX and _WORD.fullmatch(w) for w in g)
                for g in groups)):
            raise BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR)
        return groups

    @staticmethod
    def _expand(tx: Tx, words: list[str]) -> list[list[str]]:
        """Each query word, plus its nearest catalog words when it appears in no listing (a typo)."""
        candidates = [w for w in words if len(w) >= TYPO_MIN_LENGTH]
        found: dict[str, list[str]] = {}
        if candidates:
            rows = tx.fetch_all(_EXPAND_SQL, candidates, TYPO_ALTERNATIVES, TYPO_SIMILARITY)
            for row in rows:
                found.setdefault(row["word"], []).append(row["term"])
        return [[w, *found.get(w, [])] for w in words]

    @staticmethod
    def _search_sql(params: CatalogSearch, sort: str, groups: list[list[str]] | None,
                    after: dict[str, Any] | None) -> tuple[Any, ...]:
        # The inner query filters and computes the relevance score; the outer one applies the
        # keyset, the order and the limit on the raw sort columns, then renders the page's rows.
        # PostgreSQL flattens the two, so the partial sort indexes still serve plain sorts.
        select = ["a.*"]
        sources = ["agents a"]
        where = ["a.status = 'approved'"]
        args: list[Any] = []
        if groups is not None:
            select.append("ts_rank(%s::float4[], a.search_doc, q.tsq)::float8 AS score")
            args.append(RANK_WEIGHTS)
            sources.append("to_tsquery('english', %s) AS q(tsq)")
            args.append(tsquery_text(groups))
            where.append("a.search_doc @@ q.tsq")
        else:
            select.append("NULL::float8 AS score")
        for column, value in (("a.category", params.category), ("a.pricing_model", params.pricing_model)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        if params.deployment_type is not None:
            where.append("a.deployment_types @> ARRAY[%s]::text[]")
            args.append(params.deployment_type)
        if params.min_rating is not None:
            where.append("a.rating_avg >= %s")
            args.append(params.min_rating)
        keys = _SORT_KEYS[sort]
        outer_keys = [f"s.{column}" for column, _ in keys]
        inner = f"SELECT {', '.join(select)} FROM {', '.join(sources)} WHERE {' AND '.join(where)}"
        outer_where = ""
        if after is not None:
            values = after["k"]
            if not isinstance(values, list) or len(values) != len(keys):
                raise BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR)
            placeholders = ", ".join(f"%s::{sql_type}" for _, sql_type in keys)
            outer_where = f" WHERE ({', '.join(outer_keys)}, s.id) < ({placeholders}, %s)"
            args += [*values, after["id"]]
        order = ", ".join(f"{k} DESC" for k in outer_keys)
        sql = (f"SELECT {listing_columns('s')}, s.score FROM ({inner}) s{outer_where} "
               f"ORDER BY {order}, s.id DESC LIMIT %s")
        return (sql, *args, params.limit + 1)

    def explain_search(self, params: CatalogSearch) -> str:
        """``EXPLAIN (ANALYZE, BUFFERS)`` of the statements :meth:`search` runs for ``params``."""
        words = query_words(params.q or "")
        sort = params.sort or ("relevance" if words else "installs")
        after = decode_cursor(params.cursor, required=("f", "k", "id"))
        plans = []
        with self.db.transaction() as tx:
            tx.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            groups = None
            if words:
                if after:
                    groups = self._cursor_groups(after, len(words))
                else:
                    groups = self._expand(tx, words)
                    candidates = [w for w in words if len(w) >= TYPO_MIN_LENGTH]
                    if candidates:
                        plans.append(("typo lookup", tx.fetch_all(f"EXPLAIN (ANALYZE, BUFFERS) {_EXPAND_SQL}",
                                                                  candidates, TYPO_ALTERNATIVES, TYPO_SIMILARITY)))
            sql, *args = self._search_sql(params, sort, groups, after)
            plans.append(("search", tx.fetch_all(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)))
        return "\n".join(f"[{name}]\n" + "\n".join(str(next(iter(r.values()))) for r in rows)
                         for name, rows in plans)
