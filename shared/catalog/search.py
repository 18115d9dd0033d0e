"""Catalog search: full-text over approved listings, typo-tolerant, filtered, keyset-paginated.

Query words missing from the catalog are widened to their nearest catalog words by trigram
similarity (``catalog_terms``, GiST); the expansion travels in the cursor, so later pages run the
same query. Every search is planned for its own words (``plan_cache_mode = force_custom_plan``);
see docs/REGISTRY.md and the catalog figures in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.catalog.models import CatalogItem
from shared.catalog.rows import catalog_item_of, cursor_value
from shared.kernel.db.database import Database, Row, Tx
from shared.kernel.db.queries import Queries
from shared.kernel.errors import BadRequest, ErrorCode, Unprocessable
from shared.kernel.pagination import Page, cursor_sort_value, decode_cursor, next_page

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


# Sort keys: (SQL expression, SQL type for the cursor value); the listing id breaks ties.
_SORT_KEYS: dict[str, list[tuple[str, str]]] = {
    "relevance": [("score", "float8")],
    "rating": [("rating_avg", "numeric"), ("rating_count", "integer")],
    "installs": [("install_count", "bigint")],
    "newest": [("published_at", "timestamptz")],
}



_Q = Queries("shared.catalog", "search.sql")


@functools.cache
def _search_sql(sort: str) -> str:
    """The search statement for a sort key (``sort`` is one of :data:`_SORT_KEYS`, never input)."""
    keys = _SORT_KEYS[sort]
    return _Q.search.format(sort_columns=", ".join(f"s.{column}" for column, _ in keys),
                            sort_values=", ".join(f"%s::{sql_type}" for _, sql_type in keys),
                            order=", ".join(f"s.{column} DESC" for column, _ in keys))


@dataclass(frozen=True)
class _Plan:
    """What one search runs: its sort, its words and the position after which the page starts."""

    sort: str
    words: list[str]
    fingerprint: str
    after: dict[str, Any] | None


class CatalogSearcher:
    """Runs searches of the public catalog (approved listings only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def search(self, params: CatalogSearch) -> Page[CatalogItem]:
        """One page of approved listings matching ``params``, keyset-paginated on (sort key, id)."""
        plan = self._plan(params)
        with self.db.transaction() as tx:
            tx.execute(_Q.plan_each_search)
            groups = self._groups(tx, plan)
            rows = tx.fetch_all(_search_sql(plan.sort), *self._args(params, plan, groups))
        keys = [column for column, _ in _SORT_KEYS[plan.sort]]

        def key(row: Row) -> dict[str, Any]:
            position: dict[str, Any] = {"f": plan.fingerprint, "k": [cursor_value(row[c]) for c in keys],
                                        "id": row["id"]}
            if groups is not None:
                position["g"] = groups
            return position

        page, cursor = next_page(rows, params.limit, key)
        return Page[CatalogItem](items=[catalog_item_of(row) for row in page], next_cursor=cursor)

    def explain_search(self, params: CatalogSearch) -> str:
        """``EXPLAIN (ANALYZE, BUFFERS)`` of the statements :meth:`search` runs for ``params``."""
        plan = self._plan(params, check_fingerprint=False)
        plans = []
        with self.db.transaction() as tx:
            tx.execute(_Q.plan_each_search)
            groups = self._groups(tx, plan)
            candidates = [w for w in plan.words if len(w) >= TYPO_MIN_LENGTH]
            if plan.words and plan.after is None and candidates:
                plans.append(("typo lookup", tx.fetch_all(_Q.explain.format(statement=_Q.typo_expansions),
                                                          candidates, TYPO_ALTERNATIVES, TYPO_SIMILARITY)))
            plans.append(("search", tx.fetch_all(_Q.explain.format(statement=_search_sql(plan.sort)),
                                                 *self._args(params, plan, groups))))
        return "\n".join(f"[{name}]\n" + "\n".join(str(next(iter(r.values()))) for r in rows)
                         for name, rows in plans)

    @staticmethod
    def _plan(params: CatalogSearch, *, check_fingerprint: bool = True) -> _Plan:
        words = query_words(params.q or "")
        sort = params.sort or ("relevance" if words else "installs")
        if check_fingerprint and sort == "relevance" and not words:
            raise Unprocessable("sort=relevance needs a search query q",
                                details=[{"path": "sort", "message": "relevance needs q"}])
        fingerprint = hashlib.sha256(json.dumps(
            [words, params.category, params.pricing_model, params.deployment_type,
             str(params.min_rating) if params.min_rating is not None else None, sort]).encode()).hexdigest()[:16]
        after = decode_cursor(params.cursor, required=("f", "k", "id"))
        if check_fingerprint and after is not None and after["f"] != fingerprint:
            raise BadRequest("the cursor belongs to a different query", code=ErrorCode.INVALID_CURSOR)
        return _Plan(sort, words, fingerprint, after)

    def _groups(self, tx: Tx, plan: _Plan) -> list[list[str]] | None:
        """The query's word groups: from the cursor on later pages, so that they run the same query
        even if new listings have added words to the vocabulary meanwhile; None without words."""
        if not plan.words:
            return None
        return self._cursor_groups(plan.after, len(plan.words)) if plan.after else self._expand(tx, plan.words)

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
            for row in tx.fetch_all(_Q.typo_expansions, candidates, TYPO_ALTERNATIVES, TYPO_SIMILARITY):
                found.setdefault(row["word"], []).append(row["term"])
        return [[w, *found.get(w, [])] for w in words]

    @staticmethod
    def _args(params: CatalogSearch, plan: _Plan, groups: list[list[str]] | None) -> list[Any]:
        """The parameters of the search statement, in its order."""
        keys = _SORT_KEYS[plan.sort]
        values: list[Any] = [None] * len(keys)
        after_id = None
        if plan.after is not None:
            found = plan.after["k"]
            if not isinstance(found, list) or len(found) != len(keys):
                raise BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR)
            # Each value as its statement casts it, and the id as text: a 400 rather than a cast error.
            values = [cursor_sort_value(value, sql_type) for value, (_, sql_type) in zip(found, keys, strict=True)]
            after_id = cursor_sort_value(plan.after["id"], "text")
            if after_id is None:
                raise BadRequest("the cursor is not valid", code=ErrorCode.INVALID_CURSOR)
        tsquery = tsquery_text(groups) if groups is not None else None
        return [RANK_WEIGHTS, tsquery, params.category, params.category, params.pricing_model,
                params.pricing_model, params.deployment_type, params.deployment_type, params.min_rating,
                params.min_rating, after_id, *values, after_id, params.limit + 1]
