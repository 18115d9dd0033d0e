"""What is wrong with a manifest: problems with their paths, and the exception that carries them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import TypedDict

MAX_MANIFEST_BYTES = 256 * 1024


class ManifestProblem(TypedDict):
    """One problem: ``path`` like ``tools[0].permissions[1]`` ("" is the whole document) and a message."""

    path: str
    message: str


class ManifestInvalid(ValueError):
    """A manifest that cannot be accepted; ``problems`` lists every reason (for a 422's details)."""

    def __init__(self, problems: Sequence[ManifestProblem]) -> None:
        self.problems = list(problems)
        listed = "; ".join(f"{p['path'] or '(document)'}: {p['message']}" for p in self.problems)
        super().__init__(f"invalid agent manifest: {listed}")


def show(value: object) -> str:
    """A value as a message quotes it, cut to 60 characters."""
    text = repr(str(value) if isinstance(value, StrEnum) else value)
    return text if len(text) <= 60 else text[:57] + "..."


_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


def format_path(loc: Sequence[str | int]) -> str:
    """Render a location as ``tools[1].permissions[0]``; odd keys are quoted: ``properties["a b"]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{json.dumps(part, ensure_ascii=False)}]"
    return path
