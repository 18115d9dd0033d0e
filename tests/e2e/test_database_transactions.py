"""The kernel's transactions against the real database: all or nothing, whichever way the
statements travel: ``transaction()`` (BEGIN ... COMMIT in a pipeline) and ``batch()`` (one pipeline,
one implicit transaction, no BEGIN or COMMIT)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.composition import Container
from shared.kernel.db.database import QueryError, UniqueViolation

TABLE = "tx_probe.items"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def db(container: Container) -> Iterator[Any]:
    with container.db.connection() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS tx_probe")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, n int NOT NULL CHECK (n >= 0))")
    yield container.db
    with container.db.connection() as conn:
        conn.execute("DROP SCHEMA tx_probe CASCADE")


@pytest.fixture(params=["transaction", "batch"])
def block(request: pytest.FixtureRequest, db: Any) -> Any:
    """Either way of running statements as one transaction."""
    return db.transaction if request.param == "transaction" else db.batch


def _key(tag: str) -> str:
    return f"{tag}-{next(_ids)}"


def _count(db: Any, *keys: str) -> int:
    with db.read() as tx:
        return int(tx.fetch_val(f"SELECT count(*) FROM {TABLE} WHERE id = ANY(%s)", list(keys)))


class Boom(Exception):
    pass


INSERT = f"INSERT INTO {TABLE} (id, n) VALUES (%s, %s)"


def test_an_empty_transaction_commits_nothing_and_leaves_the_connection_idle(db):
    for _ in range(db.size + 1):  # every pooled connection comes back usable
        with db.transaction():
            pass
    with db.read() as tx:
        assert tx.fetch_val("SELECT 1") == 1


def test_writes_before_and_after_the_first_deferred_one_commit_together(db, block):
    a, b, c = _key("a"), _key("b"), _key("c")
    with block() as tx:
        assert tx.execute(INSERT, a, 1) == 1  # a plain round trip
        tx.defer(INSERT, b, 2)  # from here on, the pipeline
        assert tx.execute(f"UPDATE {TABLE} SET n = n + 1 WHERE id = ANY(%s)", [a, b]) == 2
        assert tx.fetch_val(f"SELECT sum(n) FROM {TABLE} WHERE id = ANY(%s)", [a, b]) == 5  # sees its own writes
        deferred = tx.defer(f"INSERT INTO {TABLE} (id, n) VALUES (%s, %s) RETURNING n", c, 7)
        assert deferred.one() == {"n": 7}
    assert _count(db, a, b, c) == 3


@pytest.mark.parametrize("where", ["before any statement", "after a plain write", "after a deferred write",
                                   "after a read that followed a deferred write"])
def test_an_exception_in_the_block_rolls_everything_back(db, block, where):
    a, b = _key("a"), _key("b")

    def run() -> None:
        with block() as tx:
            if where != "before any statement":
                tx.execute(INSERT, a, 1)
            if "deferred" in where:
                tx.defer(INSERT, b, 1)
            if "read" in where:
                assert tx.fetch_val(f"SELECT count(*) FROM {TABLE} WHERE id = ANY(%s)", [a, b]) == 2
            raise Boom

    with pytest.raises(Boom):
        run()
    assert _count(db, a, b) == 0


def test_a_failing_plain_statement_rolls_back_what_came_before(db, block):
    a, dup = _key("a"), _key("dup")
    with block() as tx:
        tx.execute(INSERT, dup, 1)

    def run() -> None:
        with block() as tx:
            tx.execute(INSERT, a, 1)
            tx.execute(INSERT, dup, 2)

    with pytest.raises(UniqueViolation):
        run()
    assert _count(db, a) == 0


def test_a_failing_deferred_statement_fails_the_commit_and_rolls_back_everything(db, block):
    a, b, c = _key("a"), _key("b"), _key("c")

    def run() -> None:
        with block() as tx:
            tx.execute(INSERT, a, 1)
            tx.defer(INSERT, b, -1)  # breaks the CHECK: surfaces at the commit
            tx.defer(INSERT, c, 1)  # skipped by the server

    with pytest.raises(QueryError):
        run()
    assert _count(db, a, b, c) == 0


def test_a_failing_deferred_statement_surfaces_at_the_next_read(db, block):
    a, b = _key("a"), _key("b")

    def run() -> None:
        with block() as tx:
            tx.defer(INSERT, a, -1)
            tx.fetch_val("SELECT 1")
            tx.execute(INSERT, b, 1)  # never reached

    with pytest.raises(QueryError):
        run()
    assert _count(db, a, b) == 0


def test_defer_is_refused_outside_a_transaction(db):
    with db.read() as tx, pytest.raises(RuntimeError):
        tx.defer(INSERT, _key("a"), 1)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["execute", "defer", "read"]), st.booleans()),
                      min_size=1, max_size=6),
       fail_in_python=st.booleans())
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_transaction_is_all_or_nothing_whatever_the_mix(db, kind, steps, fail_in_python):
    """Any sequence of plain writes, deferred writes and reads, some of them failing on the
    server (n = -1 breaks the CHECK), with or without an exception at the end: either every row
    is there, or none is."""
    keys = [_key("h") for _ in steps]
    server_fails = any(bad and step != "read" for step, bad in steps)
    with pytest.raises((QueryError, Boom)) if server_fails or fail_in_python else contextlib.nullcontext():
        with getattr(db, kind)() as tx:
            for key, (step, bad) in zip(keys, steps, strict=True):
                if step == "execute":
                    tx.execute(INSERT, key, -1 if bad else 1)
                elif step == "defer":
                    tx.defer(INSERT, key, -1 if bad else 1)
                else:
                    tx.fetch_val(f"SELECT count(*) FROM {TABLE} WHERE id = ANY(%s)", keys)
            if fail_in_python:
                raise Boom
    writes = [key for key, (step, _) in zip(keys, steps, strict=True) if step != "read"]
    expected = 0 if server_fails or fail_in_python else len(writes)
    assert _count(db, *writes) == expected



def test_a_batchs_flush_waits_without_committing(db):
    a = _key("a")

    def run() -> None:
        with db.batch() as tx:
            tx.defer(INSERT, a, 1)
            tx.flush()  # the insert ran (its errors would surface here) ...
            assert tx.fetch_val(f"SELECT count(*) FROM {TABLE} WHERE id = %s", a) == 1
            raise Boom  # ... but is not committed

    with pytest.raises(Boom):
        run()
    assert _count(db, a) == 0


def test_prepared_statements_outlive_an_aborted_batch(db):
    """An aborted batch ends with a ROLLBACK, which makes psycopg drop the connection's prepared
    statements: every statement used afterwards on any pooled connection still runs."""
    probe = f"SELECT count(*) AS n FROM {TABLE} WHERE id = %s AND %s::int >= 0"

    def run(round_: int) -> None:
        with db.batch() as tx:
            tx.fetch_one(probe, _key("p"), round_)
            tx.defer(INSERT, _key("p"), 1)
            raise Boom

    for round_ in range(2 * db.size + 2):
        with pytest.raises(Boom):
            run(round_)
        with db.read() as tx:
            assert tx.fetch_one(probe, _key("p"), round_) == {"n": 0}
        with db.transaction() as tx:
            tx.execute(INSERT, _key("q"), 1)
