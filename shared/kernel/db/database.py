"""A small pooled PostgreSQL access layer over DB-API connections (pg8000 in both modes)."""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from pg8000.converters import make_params
from pg8000.dbapi import convert_paramstyle

from shared.kernel.db import converters, wire

Row = dict[str, Any]
_STATEMENT_CACHE_SIZE = 256

#: A WHERE condition that makes the statement's own transaction commit asynchronously (the
#: commit returns before the WAL reaches the disk): ``set_config(..., true)`` is SET LOCAL from
#: inside the statement, so it costs no round trip and never leaks into other transactions on a
#: pooled connection. As an uncorrelated subquery it runs once per statement (a one-time filter),
#: not once per row scanned. Only for writes that at-least-once delivery can afford to lose.
ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"


class DbConnection(Protocol):
    """The part of a DB-API 2 connection we use (pg8000's, local or through Cloud SQL)."""

    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


ConnectionFactory = Callable[[], DbConnection]


def _rows(context: Any) -> list[Row]:
    """A pg8000 answer's rows as dicts keyed by column name."""
    if not context.columns or context.rows is None:
        return []
    names = [c["name"] for c in context.columns]
    return [dict(zip(names, r, strict=True)) for r in context.rows]


class Deferred:
    """The answer of a statement that ``Tx.defer`` holds back: asking for it sends the statement."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self._context: Any = None
        self._failure: BaseException | None = None

    def rows(self) -> list[Row]:
        """Every row the statement returned (sending it first if it is still held back)."""
        if self._context is None and self._failure is None:
            self._tx.flush()
        if self._context is None:
            raise RuntimeError("no answer: the packet that held the statement failed") from self._failure
        return _rows(self._context)

    def one(self) -> Row | None:
        """The first row, or None."""
        rows = self.rows()
        return rows[0] if rows else None


class Tx:
    """Statements on one connection; rows come back as dicts keyed by column name.

    Parameterised statements are prepared once per connection and then run in a single
    round trip (pg8000's DB-API cursor would parse and describe them on every call); a
    transaction's BEGIN travels with its first parameterised statement (``shared.kernel.db.wire``).

    ``defer`` holds a statement back until something needs an answer: the next statement that
    is run, a ``Deferred`` asked for its rows, or the commit. Held-back statements go out in that
    packet, in order, so a transaction whose last writes nobody reads commits in one round trip.
    An error in one of them surfaces where they are sent, and fails the transaction.
    """

    def __init__(self, conn: DbConnection, *, autocommit: bool = False) -> None:
        self.conn: Any = conn
        self._autocommit = autocommit
        cache = getattr(conn, "_marketplace_statements", None)
        if cache is None:
            cache = collections.OrderedDict()
            setattr(conn, "_marketplace_statements", cache)  # noqa: B010 - one cache per connection
        self._statements: collections.OrderedDict[str, wire.Prepared] = cache
        self._held: list[tuple[wire.Prepared, list[str | None], Deferred]] = []

    def _prepared(self, sql: str, args: Sequence[Any]) -> wire.Prepared:
        conn = self.conn
        prepared = self._statements.get(sql)
        if prepared is None:
            statement, _ = convert_paramstyle("format", sql, args)
            name, columns, input_funcs = conn.prepare_statement(statement, ())
            prepared = (name, columns, input_funcs, statement)
            self._statements[sql] = prepared
            if len(self._statements) > _STATEMENT_CACHE_SIZE:
                _, evicted = self._statements.popitem(last=False)
                if any(held[0] is evicted for held in self._held):
                    self.flush()  # it must run before the server forgets it
                conn.close_prepared_statement(evicted[0])
        else:
            self._statements.move_to_end(sql)
        return prepared

    def _send(self, statements: list[tuple[wire.Prepared, list[str | None]]], *, commit: bool = False
              ) -> list[Any]:
        held, self._held = self._held, []
        begin = not self._autocommit and not self.conn._in_transaction
        try:
            contexts = wire.execute_pipeline(self.conn, [(p, a) for p, a, _ in held] + statements,
                                             begin=begin, commit=commit)
        except BaseException as exc:
            for _, _, deferred in held:
                deferred._failure = exc
            raise
        for (_, _, deferred), context in zip(held, contexts, strict=False):
            deferred._context = context
        return contexts[len(held):]

    def _run(self, sql: str, args: Sequence[Any]) -> Any:
        conn = self.conn
        if not args:
            if self._held:
                self.flush()
            if not self._autocommit and not conn._in_transaction:
                conn.execute_simple("BEGIN")
            return conn.execute_simple(sql)
        prepared = self._prepared(sql, args)
        return self._send([(prepared, make_params(conn.py_types, args))])[0]

    def defer(self, sql: str, *args: Any) -> Deferred:
        """Hold a parameterised statement back until an answer is needed (see the class)."""
        if self._autocommit:
            raise RuntimeError("deferred statements need a transaction")
        if not args:
            raise ValueError("only parameterised statements can be deferred")
        deferred = Deferred(self)
        self._held.append((self._prepared(sql, args), make_params(self.conn.py_types, args), deferred))
        return deferred

    def flush(self) -> None:
        """Send every held-back statement now."""
        if self._held:
            self._send([])

    def commit(self) -> None:
        """Send what is held back with the COMMIT, in one packet (``Database.transaction`` calls it)."""
        if self._held:
            self._send([], commit=True)
        elif self.conn._in_transaction:
            self.conn.execute_simple("COMMIT")

    def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the affected row count."""
        return int(self._run(sql, args).row_count)

    def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        """All rows of a query."""
        return _rows(self._run(sql, args))

    def fetch_one(self, sql: str, *args: Any) -> Row | None:
        """The first row of a query, or None."""
        rows = self.fetch_all(sql, *args)
        return rows[0] if rows else None

    def fetch_val(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        row = self.fetch_one(sql, *args)
        return None if row is None else next(iter(row.values()))

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        for row in rows:
            self._run(sql, row)


class Database:
    """A bounded, thread-safe pool; ``transaction()`` commits on success, rolls back on error."""

    def __init__(self, factory: ConnectionFactory, *, size: int = 16) -> None:
        self._factory = factory
        self._idle: queue.LifoQueue[DbConnection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._all: list[DbConnection] = []
        self._lock = threading.Lock()
        self.size = size

    def _take(self) -> DbConnection:
        self._slots.acquire()
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            try:
                conn = self._factory()
                converters.install(conn)
            except BaseException:
                self._slots.release()
                raise
            with self._lock:
                self._all.append(conn)
            return conn

    def _give(self, conn: DbConnection, *, broken: bool) -> None:
        if broken:
            with self._lock, contextlib.suppress(ValueError):
                self._all.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()
        else:
            self._idle.put(conn)
        self._slots.release()

    @contextlib.contextmanager
    def connection(self) -> Iterator[DbConnection]:
        """A raw pooled connection (for LISTEN and simple-protocol scripts)."""
        conn = self._take()
        broken = False
        try:
            yield conn
        except BaseException:
            broken = _rollback_or_broken(conn)
            raise
        finally:
            self._give(conn, broken=broken)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Run a block in one transaction."""
        conn = self._take()
        broken = False
        try:
            tx = Tx(conn)
            yield tx
            tx.commit()
        except BaseException:
            broken = _rollback_or_broken(conn)
            raise
        finally:
            self._give(conn, broken=broken)

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        """Single-statement reads in autocommit: no BEGIN/COMMIT round trips on hot paths.

        Each statement sees its own snapshot, so use ``transaction()`` when several reads must
        agree with each other.
        """
        conn = self._take()
        broken = False
        raw: Any = conn
        try:
            raw.autocommit = True
            yield Tx(conn, autocommit=True)
        except BaseException:
            broken = _rollback_or_broken(conn)
            raise
        finally:
            if not broken:
                try:
                    raw.autocommit = False
                except Exception:  # noqa: BLE001 - a connection in a bad state is dropped
                    broken = True
            self._give(conn, broken=broken)

    def close(self) -> None:
        """Close every connection (idle ones now; busy ones are dropped on return)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def _rollback_or_broken(conn: DbConnection) -> bool:
    raw: Any = conn
    try:
        if raw._in_transaction:
            raw.execute_simple("ROLLBACK")
    except Exception:  # noqa: BLE001 - a dead connection is dropped from the pool
        return True
    return False
