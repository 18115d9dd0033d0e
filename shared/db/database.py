"""A small pooled PostgreSQL access layer over DB-API connections (pg8000 in both modes)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

Row = dict[str, Any]


class DbConnection(Protocol):
    """The part of a DB-API 2 connection we use (pg8000's, local or through Cloud SQL)."""

    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


ConnectionFactory = Callable[[], DbConnection]


class Tx:
    """One transaction: queries return rows as dicts keyed by column name."""

    def __init__(self, conn: DbConnection) -> None:
        self.conn = conn
        self._cur = conn.cursor()

    def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the affected row count."""
        self._cur.execute(sql, args)
        return int(self._cur.rowcount)

    def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        """All rows of a query."""
        self._cur.execute(sql, args)
        if self._cur.description is None:
            return []
        names = [d[0] for d in self._cur.description]
        return [dict(zip(names, r, strict=True)) for r in self._cur.fetchall()]

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
        self._cur.executemany(sql, rows)


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
            conn.commit()
        except BaseException:
            broken = _rollback_or_broken(conn)
            raise
        finally:
            self._give(conn, broken=broken)

    def close(self) -> None:
        """Close every connection (idle ones now; busy ones are dropped on return)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def _rollback_or_broken(conn: DbConnection) -> bool:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - a dead connection is dropped from the pool
        return True
    return False
