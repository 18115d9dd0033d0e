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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pg8000.core import (
    BIND,
    EXECUTE_MSG,
    NULL_BYTE,
    PARSE,
    SYNC_MSG,
    Context,
    H_pack,
    _flush,
    _write,
    i_pack,
)


def _message(code: bytes, body: bytes) -> bytes:
    return bytes(code + i_pack(len(body) + 4) + body)


# Parse the unnamed statement "BEGIN" (no parameters), bind it (no parameters, no result
# columns) and execute it. Its CommandComplete carries no row count, so it leaves the
# statement's count alone.
_BEGIN = (_message(PARSE, NULL_BYTE + b"BEGIN" + NULL_BYTE + H_pack(0))
          + _message(BIND, NULL_BYTE + NULL_BYTE + H_pack(0) + H_pack(0) + H_pack(0))
          + EXECUTE_MSG)


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


def execute_prepared(conn: Any, prepared: tuple[bytes, Any, Any, str], params: Sequence[str | None], *,
                     begin: bool = False) -> Any:
    """Run a statement prepared on ``conn`` (pg8000's ``prepare_statement`` gave its name, columns
    and input converters; then its text); with ``begin``, open a transaction first, in the same
    packet. Returns pg8000's ``Context`` (rows, row count)."""
    name, columns, input_funcs, statement = prepared
    packet = bind_message(name, params, conn._client_encoding) + EXECUTE_MSG + SYNC_MSG
    _write(conn._sock, _BEGIN + packet if begin else packet)
    _flush(conn._sock)
    context = Context(columns=columns, input_funcs=input_funcs, statement=statement)
    conn.handle_messages(context)
    return context
