"""What a port may ask of a transaction it is handed: the ``Tx`` methods, as a Protocol.

Ports (the task queue's ``enqueue``/``complete_in`` take the caller's transaction) type their
parameter with ``Statements`` so that they depend on no database implementation; the
``Tx`` of ``shared.kernel.db.database`` is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Answer(Protocol):
    """The answer of a statement sent without waiting (``Statements.defer``)."""

    def rows(self) -> list[dict[str, Any]]:
        """Every row (waiting for the answer if needed)."""
        ...

    def one(self) -> dict[str, Any] | None:
        """The first row, or None."""
        ...


class Statements(Protocol):
    """Statements inside one transaction; rows are dicts keyed by column name."""

    def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the affected row count."""
        ...

    def fetch_all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """All rows of a query."""
        ...

    def fetch_one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        """The first row, or None."""
        ...

    def fetch_val(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, or None."""
        ...

    def defer(self, sql: str, *args: Any) -> Answer:
        """Send a statement without waiting for its answer."""
        ...

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement per parameter row."""
        ...

    def flush(self) -> None:
        """Wait for every statement sent so far."""
        ...
