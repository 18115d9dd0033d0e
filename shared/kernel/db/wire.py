"""Fewer round trips and packets for pg8000's prepared statements.

pg8000 runs a prepared statement as Bind, Flush, Execute, Flush, Sync: each Flush makes the
server send what it has so far, so one statement's answer arrives in up to three packets (three
``send`` calls on the server, three ``recv`` calls here). And a transaction's ``BEGIN`` costs a
round trip of its own before the first statement.

Here a statement is written as Bind, Execute, Sync in one packet, and a transaction's ``BEGIN``
travels in the same packet, as an unnamed statement ahead of the first statement and before the
one Sync: if ``BEGIN`` failed, the server would skip the statement up to the Sync, so a statement
never runs outside the transaction it was meant for. The answers are read with pg8000's own
message handling (rows, errors, transaction status), in one pass up to the Sync's answer.

Several statements can share one packet and one Sync (``execute_pipeline``): a transaction's
writes whose answers nobody waits for travel together, with its ``COMMIT`` last. The server runs
them in order; after an error it skips everything up to the Sync, so neither the statements after
the failed one nor the ``COMMIT`` run, and the transaction is left failed for the caller to roll
back.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from pg8000.core import (
    BIND,
    COMMAND_COMPLETE,
    ERROR_RESPONSE,
    EXECUTE_MSG,
    NULL_BYTE,
    PARSE,
    READY_FOR_QUERY,
    SYNC_MSG,
    Context,
    H_pack,
    _flush,
    _read,
    _write,
    ci_unpack,
    i_pack,
)


def _message(code: bytes, body: bytes) -> bytes:
    return bytes(code + i_pack(len(body) + 4) + body)


def _unnamed(sql: bytes) -> bytes:
    """Parse, bind and execute an unnamed statement without parameters or result columns."""
    return bytes(_message(PARSE, NULL_BYTE + sql + NULL_BYTE + H_pack(0))
                 + _message(BIND, NULL_BYTE + NULL_BYTE + H_pack(0) + H_pack(0) + H_pack(0))
                 + EXECUTE_MSG)


# Their CommandComplete carries no row count, so they leave a statement's count alone.
_BEGIN = _unnamed(b"BEGIN")
_COMMIT = _unnamed(b"COMMIT")

Prepared = tuple[bytes, Any, Any, str]  # name, columns, input converters, text (pg8000's prepare)


def bind_message(name: bytes, params: Sequence[str | None], encoding: str) -> bytes:
    """Bind ``params`` (text, as pg8000's ``make_params`` gives them) to a prepared statement."""
    body = bytearray(NULL_BYTE + name + H_pack(0) + H_pack(len(params)))
    for value in params:
        if value is None:
            body += i_pack(-1)
        else:
            data = value.encode(encoding)
            body += i_pack(len(data))
            body += data
    body += H_pack(0)  # every result column in text, as pg8000 reads them
    return _message(BIND, bytes(body))


_LENGTH = struct.Struct("!i")


class _Answers:
    """Routes a pipeline's answer messages to the statement they belong to."""

    __slots__ = ("answers", "current", "done", "error")

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.current = 0
        self.done = False
        self.error: Exception | None = None

    def take(self, handlers: dict[bytes, Any], code: bytes, data: bytes) -> None:
        handlers[code](data, self.answers[self.current])
        if code == COMMAND_COMPLETE:
            self.current = min(self.current + 1, len(self.answers) - 1)
        elif code == ERROR_RESPONSE and self.error is None:
            self.error = self.answers[self.current].error
        elif code == READY_FOR_QUERY:
            self.done = True


def execute_prepared(conn: Any, prepared: Prepared, params: Sequence[str | None], *, begin: bool = False) -> Any:
    """Run a statement prepared on ``conn`` (pg8000's ``prepare_statement`` gave its name, columns
    and input converters; then its text); with ``begin``, open a transaction first, in the same
    packet. Returns pg8000's ``Context`` (rows, row count)."""
    return execute_pipeline(conn, [(prepared, params)], begin=begin)[0]


def execute_pipeline(conn: Any, statements: Sequence[tuple[Prepared, Sequence[str | None]]], *,
                     begin: bool = False, commit: bool = False) -> list[Any]:
    """Run prepared statements in one packet and one round trip, optionally after ``BEGIN`` and
    before ``COMMIT``; returns one pg8000 ``Context`` per statement, in order.

    The first error is raised once the server has answered the Sync: by then it skipped every
    statement after the failed one, and the ``COMMIT``.
    """
    encoding = conn._client_encoding
    packet = bytearray(_BEGIN if begin else b"")
    contexts = []
    for (name, columns, input_funcs, statement), params in statements:
        packet += bind_message(name, params, encoding)
        packet += EXECUTE_MSG
        contexts.append(Context(columns=columns, input_funcs=input_funcs, statement=statement))
    if commit:
        packet += _COMMIT
    packet += SYNC_MSG
    _write(conn._sock, bytes(packet))
    _flush(conn._sock)
    # Each statement's answer ends with its CommandComplete (or an ErrorResponse, after which
    # the server sends nothing more but the Sync's ReadyForQuery).
    answers = ([Context(statement="BEGIN")] if begin else []) + contexts + [Context(statement="COMMIT")]
    handlers, sock = conn.message_types, conn._sock
    state = _Answers(answers)
    while not state.done:
        # Whole messages already received are parsed straight from the reader's buffer and
        # consumed with one read; a message the buffer holds only part of is read on its own.
        buffered = sock.peek(5)
        offset, size = 0, len(buffered)
        while offset + 5 <= size and not state.done:
            code = buffered[offset:offset + 1]
            end = offset + 1 + _LENGTH.unpack_from(buffered, offset + 1)[0]
            if end > size:
                break
            state.take(handlers, code, buffered[offset + 5:end])
            offset = end
        if offset:
            sock.read(offset)
        elif not state.done:
            code, length = ci_unpack(_read(sock, 5))
            state.take(handlers, code, _read(sock, length - 4))
    error = state.error
    if error is not None:
        raise error
    return contexts
