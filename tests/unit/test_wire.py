"""Statements written as one packet, a transaction's BEGIN riding with its first statement."""

from __future__ import annotations

import pg8000.core as core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pg8000.core import BIND, CoreConnection
from pg8000.exceptions import DatabaseError

from shared.kernel.db import database, wire


class _Counting:
    """Counts the packets a connection sends (each flush is one write to the socket)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.flushes = 0
        original = wire._flush

        def counted(sock):
            self.flushes += 1
            return original(sock)

        monkeypatch.setattr(wire, "_flush", counted)


def _table(container, name: str) -> None:
    with container.db.transaction() as tx:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {name} (id text PRIMARY KEY, n int NOT NULL)")
        tx.execute(f"DELETE FROM {name}")


def test_a_transaction_is_one_packet_per_statement_plus_commit(container, monkeypatch):
    _table(container, "wire_probe")
    counting = _Counting(monkeypatch)
    with container.db.transaction() as tx:
        tx.execute("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "a", 1)
        assert tx.conn._in_transaction  # BEGIN went first, in the same packet
        tx.execute("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "b", 2)
        assert tx.fetch_val("SELECT sum(n) FROM wire_probe WHERE id = ANY(%s::text[])", ["a", "b"]) == 3
    assert counting.flushes == 3  # three statements; COMMIT is pg8000's own simple query
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM wire_probe WHERE n > %s", 0) == 2


def test_the_first_statement_runs_inside_the_transaction(container):
    _table(container, "wire_probe")

    def insert_then_fail() -> None:
        with container.db.transaction() as tx:
            tx.execute("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "rolled-back", 1)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM wire_probe WHERE id = %s", "rolled-back") == 0


def test_an_error_in_the_first_statement_leaves_the_connection_in_step(container):
    _table(container, "wire_probe")
    with pytest.raises(DatabaseError), container.db.transaction() as tx:
        tx.execute("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "x", None)  # NOT NULL violated
    # The pool's connections answer the next statements correctly: nothing was left unread.
    for _ in range(container.db.size):
        with container.db.transaction() as tx:
            assert tx.fetch_val("SELECT %s::int + 1", 41) == 42
            assert tx.fetch_val("SELECT count(*) FROM wire_probe WHERE id = %s", "x") == 0


def test_the_autocommit_reads_send_no_begin(container, monkeypatch):
    counting = _Counting(monkeypatch)
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT %s::text", "plain") == "plain"
        assert not tx.conn._in_transaction
    assert counting.flushes == 1


def test_deferred_statements_commit_in_one_packet_with_their_answers_after(container, monkeypatch):
    _table(container, "wire_probe")
    counting = _Counting(monkeypatch)
    with container.db.transaction() as tx:
        first = tx.defer("INSERT INTO wire_probe (id, n) VALUES (%s, %s) RETURNING id, n", "a", 1)
        second = tx.defer("UPDATE wire_probe SET n = n + %s WHERE id = %s RETURNING n", 10, "a")
        assert counting.flushes == 0 and not tx.conn._in_transaction  # nothing sent yet
    assert counting.flushes == 1  # BEGIN, both statements and COMMIT
    assert first.one() == {"id": "a", "n": 1} and second.rows() == [{"n": 11}]
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT n FROM wire_probe WHERE id = %s", "a") == 11


def test_deferred_statements_go_before_the_next_statement_in_its_packet(container, monkeypatch):
    _table(container, "wire_probe")
    counting = _Counting(monkeypatch)
    with container.db.transaction() as tx:
        tx.defer("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "a", 1)
        tx.defer("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "b", 2)
        assert tx.fetch_val("SELECT sum(n) FROM wire_probe WHERE n > %s", 0) == 3  # sees both
        later = tx.defer("DELETE FROM wire_probe WHERE id = %s RETURNING id", "a")
        assert later.rows() == [{"id": "a"}]  # asking for the answer sends it
        assert counting.flushes == 2
    assert counting.flushes == 2  # nothing was held back any more: pg8000's own COMMIT


def test_a_failing_deferred_statement_fails_its_transaction_and_nothing_commits(container):
    _table(container, "wire_probe")
    held = {}

    def three_inserts_the_second_broken() -> None:
        with container.db.transaction() as tx:
            held["before"] = tx.defer("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "kept?", 1)
            tx.defer("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "broken", None)  # NOT NULL violated
            held["after"] = tx.defer("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "skipped", 3)

    with pytest.raises(DatabaseError, match="not-null"):
        three_inserts_the_second_broken()
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM wire_probe WHERE n > %s", -1) == 0
    for statement in held.values():  # the one before ran and rolled back; the one after never ran
        with pytest.raises(RuntimeError, match="no answer"):
            statement.rows()
    # Every pooled connection is in step afterwards.
    for _ in range(container.db.size):
        with container.db.transaction() as tx:
            assert tx.fetch_val("SELECT %s::int + 1", 1) == 2


def test_a_block_that_raises_sends_nothing_it_held_back(container, monkeypatch):
    _table(container, "wire_probe")
    counting = _Counting(monkeypatch)

    def hold_then_abort() -> None:
        with container.db.transaction() as tx:
            tx.defer("INSERT INTO wire_probe (id, n) VALUES (%s, %s)", "never", 1)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        hold_then_abort()
    assert counting.flushes == 0
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT count(*) FROM wire_probe WHERE id = %s", "never") == 0


def test_a_held_statement_evicted_from_the_statement_cache_runs_before_it_is_closed(container, monkeypatch):
    _table(container, "wire_probe")
    monkeypatch.setattr(database, "_STATEMENT_CACHE_SIZE", 2)
    with container.db.transaction() as tx:
        for n in range(6):  # six distinct statements through a cache of two
            tx.defer(f"INSERT INTO wire_probe (id, n) VALUES (%s, %s + {n})", f"row-{n}", 0)
    with container.db.read() as tx:
        assert tx.fetch_val("SELECT sum(n) FROM wire_probe WHERE n >= %s", 0) == sum(range(6))


def test_autocommit_reads_cannot_hold_statements_back(container):
    with container.db.read() as tx, pytest.raises(RuntimeError, match="transaction"):
        tx.defer("SELECT %s::int", 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text()), max_size=8))
def test_bind_messages_match_pg8000s(params):
    """The Bind we write is byte for byte the one pg8000 would send (without its Flush)."""
    sent: list[bytes] = []

    class Recorder(CoreConnection):
        def __init__(self) -> None:  # no socket: only the message encoding is exercised
            self._client_encoding = "utf8"
            self._sock = None

        def _send_message(self, code, data):
            sent.append(bytes(code) + (len(data) + 4).to_bytes(4, "big") + bytes(data))

    recorder = Recorder()
    original_write = core._write
    core._write = lambda sock, data: None  # the Flush pg8000 adds after Bind
    try:
        recorder.send_BIND(b"pg8000_statement_7\x00", params)
    finally:
        core._write = original_write
    assert sent == [wire.bind_message(b"pg8000_statement_7\x00", params, "utf8")]
    assert sent[0][:1] == BIND
