"""Lines to a process's stderr are written in batches (shared/kernel/jsonlog.py, BatchingStreamHandler):
none is lost, warnings are not held back, a forked child writes its own lines at once."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest
from support.wait import wait_until

from shared.kernel.jsonlog import BatchingStreamHandler, JsonFormatter


class Recording:
    """A stream that counts its writes."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(self.writes)


Logged = tuple[logging.Logger, BatchingStreamHandler, Recording]


@pytest.fixture
def logger() -> Iterator[Logged]:
    stream = Recording()
    handler = BatchingStreamHandler(stream, interval=0.05)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(f"batching-{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log, handler, stream
    log.removeHandler(handler)


def test_lines_come_out_together_and_in_order(logger: Logged) -> None:
    log, _, stream = logger
    for n in range(50):
        log.info("line %d", n)
    assert stream.writes == []  # held back: the batch fills for up to the interval
    wait_until(lambda: stream.text.count("\n") == 50, timeout=5, interval=0.01, what="the 50 lines")
    assert len(stream.writes) < 5  # one write (or a few), not fifty
    assert [line.split('"message": "')[1].split('"')[0] for line in stream.text.splitlines()] == \
        [f"line {n}" for n in range(50)]


def test_a_warning_goes_out_at_once_with_what_waits_before_it(logger: Logged) -> None:
    log, _, stream = logger
    log.info("first")
    log.warning("then a warning")
    assert "first" in stream.text and "then a warning" in stream.text
    assert stream.text.index("first") < stream.text.index("then a warning")


def test_flush_writes_what_waits(logger: Logged) -> None:
    log, handler, stream = logger
    log.info("pending")
    handler.flush()  # as logging.shutdown does at exit
    assert "pending" in stream.text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_writes_at_once_and_not_its_parents_lines(logger: Logged) -> None:
    log, handler, _ = logger
    read_end, write_end = os.pipe()
    log.info("the parent's pending line")
    pid = os.fork()
    if pid == 0:  # the child: its lines to the pipe, at once
        try:
            with os.fdopen(write_end, "w") as out:
                handler.setStream(out)
                log.info("the child's line")
                out.flush()
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        written = pipe.read()
    assert "the child's line" in written and "the parent's pending line" not in written
