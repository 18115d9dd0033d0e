"""The ``marketplace`` command, as the tests that start it see it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MARKETPLACE = Path(sys.executable).parent / "marketplace"


def read_until_ready(proc: subprocess.Popen[str]) -> list[str]:
    """The lines ``marketplace up`` printed up to its ``READY`` line; fails with them if it ends first.

    ``proc`` was started with ``stdout=subprocess.PIPE`` and ``text=True``; what follows READY is
    left in the pipe for the caller to read (or drain).
    """
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("READY "):
            return lines
    raise AssertionError("marketplace up ended before it was ready:\n" + "".join(lines))
