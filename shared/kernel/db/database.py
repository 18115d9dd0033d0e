"""PostgreSQL access for every context: a pool of psycopg 3 connections, transactions and reads.

psycopg's public API does all the protocol work: prepared statements (``prepare_threshold=0``:
parsed once per connection, then one Bind/Execute each), pipeline mode (statements are sent without
waiting for the answers of the ones before), ``psycopg_pool`` for the connections. Three choices
make the hot paths cheap:

* **A transaction is one pipeline.** Connections stay in autocommit and a transaction sends its
  own ``BEGIN`` as the first statement of a pipeline, so BEGIN costs no round trip of its own
  (psycopg's implicit BEGIN would wait for its answer). Reads that need an answer flush the
  pipeline up to themselves; writes that nobody reads inside the transaction (``Tx.defer``) are
  sent without waiting, and the ``COMMIT`` goes out behind them: such a transaction commits in
  one round trip. After an error the server skips everything up to the next Sync, so neither the
  statements after a failed one nor the COMMIT run; the transaction is rolled back.
* **A batch is a transaction without BEGIN and COMMIT** (``Database.batch()``, the run life
  cycle's hot paths): PostgreSQL runs a pipeline's statements up to its Sync as one implicit
  transaction, committed at the Sync. An exception in the block sends a ``ROLLBACK`` ahead of the
  Sync (the server logs that no transaction block is open and rolls the implicit one back), so
  it is as all-or-nothing as ``transaction()`` with two statements fewer (measured:
  docs/BENCHMARKS.md). What PostgreSQL allows only in a transaction block (``LOCK TABLE``, ``SET
  LOCAL``, savepoints) stays in ``transaction()``.
* **Single-statement reads run in autocommit** (``Database.read()``): no BEGIN/COMMIT at all.

Rows come back as dicts keyed by column name. Server-reported errors become the kernel's
``QueryError`` (``UniqueViolation`` for a duplicate key), so no context imports the driver. When
the server cannot be reached (it died, it restarts, no connection comes in time) every call raises
``DatabaseUnavailable`` (a 503 with ``Retry-After``); a connection that failed is discarded by the
pool (its status is BAD), the idle ones are checked at once, and while connecting fails a caller
waits at most ``UNAVAILABLE_WAIT`` seconds for a connection instead of the pool's full timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import JsonbDumper
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.kernel.db.queries import Queries
from shared.kernel.errors import DatabaseUnavailable

Row = dict[str, Any]
_log = logging.getLogger(__name__)

#: A WHERE condition that makes the statement's own transaction commit asynchronously (the
#: commit returns before the WAL reaches the disk): ``set_config(..., true)`` is SET LOCAL from
#: inside the statement, so it costs no round trip and never leaks into other transactions on a
#: pooled connection. As an uncorrelated subquery it runs once per statement (a one-time filter),
#: not once per row scanned. Only for writes that at-least-once delivery can afford to lose.
_Q = Queries("shared.kernel.db")
ASYNC_COMMIT = _Q.async_commit

#: How many prepared statements a connection keeps (psycopg evicts the least recently used).
PREPARED_PER_CONNECTION = 256
#: How long a caller waits for a pooled connection (seconds): normally, and while the database
#: is known to be unreachable (the last connection attempt failed).
CONNECTION_WAIT = 30.0
UNAVAILABLE_WAIT = 1.0

# Connection-level failures (08: connection exception, 57: operator intervention, 53:
# insufficient resources, 58: system error) are not the statement's fault: DatabaseUnavailable.
_CONNECTION_CLASSES = frozenset({"08", "53", "57", "58"})

Connect = Callable[..., psycopg.Connection[Any]]


class QueryError(Exception):
    """The server refused a statement (a constraint, a trigger, a bad cast): its SQLSTATE and
    what it said. Contexts catch this, never the driver's errors."""

    def __init__(self, message: str, *, sqlstate: str | None, constraint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint


class UniqueViolation(QueryError):
    """A duplicate key (SQLSTATE 23505); ``constraint`` names the index it broke."""


def _unreachable(exc: psycopg.Error) -> bool:
    """A failure of the connection or the server, not of the statement: the server went away (no
    SQLSTATE, or 08/57/53/58), the connection is closed, or no connection came in time."""
    if isinstance(exc, psycopg.InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate[:2] in _CONNECTION_CLASSES)


def _translate(exc: psycopg.Error) -> Exception:
    if _unreachable(exc):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    state = exc.sqlstate
    if not isinstance(exc, psycopg.DatabaseError) or state is None:
        return exc
    kind = UniqueViolation if isinstance(exc, pg_errors.UniqueViolation) else QueryError
    return kind(str(exc), sqlstate=state, constraint=exc.diag.constraint_name)


class _QueryErrors:
    """``with _query_errors():`` turns the driver's errors into the kernel's (``_translate``). A
    class rather than a generator-based context manager: it is entered around every statement."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, psycopg.Error):
            translated = _translate(exc)
            if translated is not exc:
                raise translated from exc


_QUERY_ERRORS = _QueryErrors()


def _query_errors() -> _QueryErrors:
    return _QUERY_ERRORS


def _rows(cursor: psycopg.Cursor[Row]) -> list[Row]:
    """Every row of the cursor's answer (waiting for it in a pipeline); none for a command."""
    try:
        return cursor.fetchall()
    except psycopg.ProgrammingError:
        if cursor.pgresult is not None and cursor.description is None:
            return []  # a statement without a result set (an UPDATE without RETURNING)
        raise


class Deferred:
    """The answer of a statement that ``Tx.defer`` sent without waiting: asking for it waits."""

    __slots__ = ("_cursor", "_rows")

    def __init__(self, cursor: psycopg.Cursor[Row]) -> None:
        self._cursor = cursor
        self._rows: list[Row] | None = None

    def rows(self) -> list[Row]:
        """Every row the statement returned (waiting for the answer if it has not come yet)."""
        if self._rows is None:
            with _query_errors():
                self._rows = _rows(self._cursor)
        return self._rows

    def one(self) -> Row | None:
        """The first row, or None."""
        rows = self.rows()
        return rows[0] if rows else None


class Tx:
    """Statements on one connection; rows come back as dicts keyed by column name.

    Inside ``Database.transaction()`` every statement rides the transaction's pipeline: ``execute``
    and the ``fetch_*`` methods wait for their own answer (and so for every answer before it),
    ``defer`` does not wait at all; its error, if any, surfaces at the next statement that waits,
    or at the commit, and fails the transaction. In ``Database.read()`` each statement is one
    round trip in autocommit and ``defer`` is refused.
    """

    __slots__ = ("_conn", "_implicit", "_pipeline")

    def __init__(self, conn: psycopg.Connection[Any], pipeline: psycopg.Pipeline | None = None, *,
                 implicit: bool = False) -> None:
        self._conn = conn
        self._pipeline = pipeline
        self._implicit = implicit  # Database.batch(): a Sync would end (commit) the transaction

    def _cursor(self, sql: str, args: Sequence[Any]) -> psycopg.Cursor[Row]:
        cursor = self._conn.cursor(row_factory=dict_row)
        with _query_errors():
            cursor.execute(sql, args or None)
        return cursor

    def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the affected row count."""
        cursor = self._cursor(sql, args)
        if self._pipeline is not None:
            with _query_errors():
                _rows(cursor)  # the row count is known once the answer is in
        return cursor.rowcount

    def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        """All rows of a query."""
        cursor = self._cursor(sql, args)
        with _query_errors():
            return _rows(cursor)


    def fetch_one(self, sql: str, *args: Any) -> Row | None:
        """The first row of a query, or None."""
        rows = self.fetch_all(sql, *args)
        return rows[0] if rows else None

    def fetch_val(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        row = self.fetch_one(sql, *args)
        return None if row is None else next(iter(row.values()))

    def defer(self, sql: str, *args: Any) -> Deferred:
        """Send a parameterised statement without waiting for its answer (see the class)."""
        if self._pipeline is None:
            raise RuntimeError("deferred statements need a transaction")
        if not args:
            raise ValueError("only parameterised statements can be deferred")
        return Deferred(self._cursor(sql, args))

    def flush(self) -> None:
        """Wait for every statement sent so far (raising the first error among them)."""
        if self._pipeline is None:
            return
        if self._implicit:
            # A Sync would commit a batch's implicit transaction: a statement's answer waits for
            # every one before it instead (psycopg asks with a flush request, not a Sync).
            self.fetch_val(_Q.batch_flush)
            return
        with _query_errors():
            self._pipeline.sync()

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        if not rows:
            return
        with _query_errors(), self._conn.cursor() as cursor:
            cursor.executemany(sql, rows)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.prepared_max = PREPARED_PER_CONNECTION
    conn.prepare_threshold = 0  # every statement is prepared on its first use on the connection
    # A dict parameter is a JSON document, as a jsonb (lists stay arrays).
    conn.adapters.register_dumper(dict, JsonbDumper)


class Database:
    """A bounded, thread-safe pool; ``transaction()`` commits on success, rolls back on error."""

    def __init__(self, connect: Connect, *, size: int = 16) -> None:
        database = self

        class _Connection(psycopg.Connection[Any]):
            @classmethod
            def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:  # noqa: ARG003 - the factory knows
                try:
                    conn = connect()
                except psycopg.Error:
                    database._reachable.clear()
                    raise
                database._reachable.set()
                return conn

        self.size = size
        self._reachable = threading.Event()
        self._reachable.set()
        self._checking = threading.Lock()
        self._pool: ConnectionPool[Any] = ConnectionPool(
            connection_class=_Connection, min_size=1, max_size=size, configure=_configure,
            open=True, timeout=CONNECTION_WAIT, name="marketplace")

    def _lost(self) -> None:
        # One connection failed: the idle ones most likely share its fate (a restarted server).
        # Check them in the background so that the next callers do not each find a dead one.
        if self._checking.acquire(blocking=False):
            def check() -> None:
                try:
                    self._pool.check()
                except Exception:  # noqa: BLE001 - a best effort; the pool discards bad ones anyway
                    _log.debug("checking the pool's connections failed", exc_info=True)
                finally:
                    self._checking.release()
            threading.Thread(target=check, name="db-pool-check", daemon=True).start()

    @contextlib.contextmanager
    def _checkout(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._getconn()
        failure: BaseException | None = None
        try:
            with conn:  # the connection's own exit: commit, or roll back on an error
                yield conn
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._putconn(conn, failure)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A raw pooled connection in autocommit (migrations, maintenance scripts)."""
        with self._checkout() as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """Run a block in one transaction (one pipeline; see the module)."""
        with self._checkout() as conn:
            try:
                with _query_errors(), conn.pipeline() as pipeline:
                    conn.execute("BEGIN")
                    yield Tx(conn, pipeline)
                    conn.execute("COMMIT")
                    # Leaving the pipeline sends the Sync and waits for every answer.
            except BaseException:
                if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def batch(self) -> Iterator[Tx]:
        """Run a block as one pipeline in one implicit transaction: no BEGIN and no COMMIT (two
        statements fewer than ``transaction()``).

        PostgreSQL runs every statement up to the pipeline's Sync, which the end of the block
        sends, as one transaction: committed at the Sync, rolled back by any failed statement.
        An exception in the block sends a ROLLBACK first (the server logs a warning that no
        transaction block is open, and rolls back the implicit one). Only for plain statements:
        what PostgreSQL allows only inside a transaction block (``LOCK TABLE``, ``SET LOCAL``,
        savepoints, transaction control) belongs in ``transaction()``; ``set_config(..., true)``
        works in both. ``Tx.flush`` waits without a Sync.
        """
        with self._checkout() as conn:
            try:
                with _query_errors(), conn.pipeline() as pipeline:
                    try:
                        yield Tx(conn, pipeline, implicit=True)
                    except BaseException:
                        if not conn.closed:
                            with contextlib.suppress(psycopg.Error):
                                conn.execute("ROLLBACK")  # before the Sync commits what was sent
                        raise
            except BaseException:
                if not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                            conn.execute("ROLLBACK")
                        # psycopg answers a ROLLBACK by forgetting the connection's prepared
                        # statements and deallocating them all with the next statement it runs,
                        # after preparing that one. A statement that is not prepared takes the
                        # deallocation here, so none that psycopg still counts as prepared goes.
                        conn.execute(_Q.batch_flush, prepare=False)
                raise

    def read(self) -> _Read:
        """Single-statement reads in autocommit: no BEGIN/COMMIT round trips on hot paths.

        Each statement sees its own snapshot, so use ``transaction()`` when several reads must
        agree with each other.
        """
        return _Read(self)

    def _getconn(self) -> psycopg.Connection[Any]:
        """A pooled connection (``_checkout`` and ``_Read`` take theirs here); an unreachable
        database is ``DatabaseUnavailable``."""
        wait = CONNECTION_WAIT if self._reachable.is_set() else UNAVAILABLE_WAIT
        try:
            conn: psycopg.Connection[Any] = self._pool.getconn(timeout=wait)
        except psycopg.Error as exc:
            if not _unreachable(exc):
                raise
            self._lost()
            raise DatabaseUnavailable("the database is unavailable; retry shortly") from exc
        return conn

    def _putconn(self, conn: psycopg.Connection[Any], exc: BaseException | None) -> None:
        """Give a connection back (the pool discards a broken one); a failure on it that says the
        database is gone marks it lost and becomes ``DatabaseUnavailable``."""
        self._pool.putconn(conn)
        if isinstance(exc, DatabaseUnavailable):
            self._lost()
        elif isinstance(exc, psycopg.Error) and _unreachable(exc):
            self._lost()
            raise DatabaseUnavailable("the database is unavailable; retry shortly") from exc

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()


class _Read:
    """``with db.read() as tx``: ``_checkout`` as a class, without generator frames or the
    connection's commit step (reads run in autocommit; a read is the most frequent statement:
    every request's authentication)."""

    __slots__ = ("_conn", "_db")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Tx:
        self._conn = self._db._getconn()
        return Tx(self._conn)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._db._putconn(conn, exc)


def connect_url(url: str, *, application_name: str = "marketplace") -> Connect:
    """Connections to a ``postgresql://`` URL, in autocommit."""

    def connect() -> psycopg.Connection[Any]:
        return psycopg.Connection.connect(url, autocommit=True, application_name=application_name)

    return connect


__all__ = ["ASYNC_COMMIT", "Connect", "Database", "Deferred", "QueryError", "Row", "Tx", "UniqueViolation",
           "connect_url"]
