"""The named-query loader: how a ``.sql`` file of ``-- name:`` blocks reads, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.kernel.db.queries import Queries, QueryFileError, parse_queries

ROOT = Path(__file__).resolve().parents[2]


def test_blocks_are_read_by_name_without_their_comments_or_semicolon():
    text = """-- The file's own comment.

-- name: one
-- What it does.
SELECT 1 FROM users WHERE id = %s;

-- name: two
UPDATE users
SET email = %s  -- a comment inside stays
WHERE id = %s;
"""
    assert parse_queries(text) == {
        "one": "SELECT 1 FROM users WHERE id = %s",
        "two": "UPDATE users\nSET email = %s  -- a comment inside stays\nWHERE id = %s",
    }


@pytest.mark.parametrize(("text", "problem"), [
    ("SELECT 1;\n-- name: one\nSELECT 2;", "before the first"),
    ("-- name: one\nSELECT 1;\n-- name: one\nSELECT 2;", "defined twice"),
    ("-- name: one\n-- only a comment\n", "is empty"),
])
def test_a_broken_file_is_refused(text, problem):
    with pytest.raises(QueryFileError, match=problem):
        parse_queries(text, source="x.sql")


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
                       st.from_regex(r"SELECT [a-z0-9_ ,=%()]{1,40}", fullmatch=True), min_size=1, max_size=8))
def test_whatever_is_written_comes_back(queries):
    text = "\n\n".join(f"-- name: {name}\n-- about {name}\n{sql};" for name, sql in queries.items())
    assert parse_queries(text) == {name: sql.strip() for name, sql in queries.items()}


def test_a_missing_name_is_an_attribute_error_naming_the_file():
    with pytest.raises(AttributeError, match=r"shared/identity/queries\.sql has no query named 'nope'"):
        _ = Queries("shared.identity").nope


def test_every_sql_file_of_every_context_reads():
    files = sorted((ROOT / "shared").glob("*/**/*.sql"))
    files = [f for f in files if "migrations" not in f.parts]
    assert len(files) >= 8
    for path in files:
        package = ".".join(path.parent.relative_to(ROOT).parts)
        assert Queries(package, path.name).all(), path
