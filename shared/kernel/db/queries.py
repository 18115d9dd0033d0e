"""Named SQL statements kept in ``.sql`` files beside the code that runs them.

A context's statements live in its ``queries.sql`` (procrastinate's ``queries.sql`` is the model):
each starts with a ``-- name: <identifier>`` line, may carry ``--`` lines that say what it does,
and runs to the next ``-- name:`` line. The file is read once, on first use, from the package's
data (so it ships in the wheel), and a statement is reached as an attribute::

    _Q = Queries("shared.identity")
    row = tx.fetch_one(_Q.user_by_email, email)

A name that the file does not hold is an ``AttributeError`` at the call site, and a file with a
name twice, an empty statement or text before its first name is refused when it is read.
A few statements are templates whose ``{placeholders}`` take SQL that the code chooses from a
fixed set (a column list, a sort key); values always travel as ``%s`` parameters.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^-- name: *([a-z_][a-z0-9_]*) *$", re.MULTILINE)


class QueryFileError(ValueError):
    """A ``.sql`` file of named queries that cannot be read as one."""


def parse_queries(text: str, *, source: str = "<sql>") -> dict[str, str]:
    """Every ``-- name:`` statement of ``text`` by name, without its leading comment lines."""
    matches = list(_NAME.finditer(text))
    head = text[: matches[0].start()] if matches else text
    if any(line.strip() and not line.lstrip().startswith("--") for line in head.splitlines()):
        raise QueryFileError(f"{source}: SQL before the first '-- name:' line")
    queries: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        lines = text[match.end():end].strip("\n").splitlines()
        while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
            lines.pop(0)
        body = "\n".join(lines).strip().removesuffix(";").strip()
        name = match.group(1)
        if not body:
            raise QueryFileError(f"{source}: query {name!r} is empty")
        if name in queries:
            raise QueryFileError(f"{source}: query {name!r} is defined twice")
        queries[name] = body
    return queries


@functools.cache
def _load(package: str, filename: str) -> dict[str, str]:
    # One read per file and process, however many modules of the package name it.
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return parse_queries(text, source=f"{package.replace('.', '/')}/{filename}")


class Queries:
    """The named statements of one package's ``.sql`` file, read on first use."""

    def __init__(self, package: str, filename: str = "queries.sql") -> None:
        self._package = package
        self._filename = filename

    @property
    def source(self) -> str:
        """Where the statements come from (``package/filename``)."""
        return f"{self._package.replace('.', '/')}/{self._filename}"

    def all(self) -> dict[str, str]:
        """Every statement by name."""
        return _load(self._package, self._filename)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.all()[name]
        except KeyError:
            raise AttributeError(f"{self.source} has no query named {name!r}") from None
