"""How the client CLI prints: ``--json`` prints the API's JSON as is; otherwise tables and colour
(``rich``) on a terminal, and plain tab-separated lines when piped."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

_STATUS_STYLE = {"succeeded": "green", "ready": "green", "failed": "red", "dead": "red", "cancelled": "yellow",
                 "running": "cyan", "queued": "cyan", "pending": "cyan", "provisioning": "cyan",
                 "unreachable": "yellow", "uninstalled": "dim"}


class Output:
    """One command's printer."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def terminal(self) -> bool:
        """Whether standard output is a terminal (tables and colour) rather than a pipe."""
        return self.out.is_terminal

    def json(self, data: Any) -> None:
        """Print JSON (compact when piped, indented on a terminal)."""
        click.echo(json.dumps(data, indent=2 if self.terminal else None, default=str, ensure_ascii=False))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        """Rows under column headings (``--json`` callers print the data themselves)."""
        if not self.terminal:
            click.echo("\t".join(c.upper() for c in columns))
            for row in rows:
                click.echo("\t".join("" if v is None else str(v) for v in row))
            return
        table = Table(title=title, header_style="bold")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(self.styled(v) for v in row))
        self.out.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """``name: value`` lines."""
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            if self.terminal:
                self.out.print(f"[bold]{key.ljust(width)}[/bold]  {self.styled(value)}")
            else:
                click.echo(f"{key.ljust(width)}  {'' if value is None else value}")

    def styled(self, value: Any) -> str:
        """A cell: statuses coloured (on a terminal), ``None`` empty, markup escaped."""
        from rich.markup import escape  # noqa: PLC0415

        text = "" if value is None else str(value)
        style = _STATUS_STYLE.get(text)
        return f"[{style}]{escape(text)}[/{style}]" if style and self.terminal else escape(text)

    def say(self, message: str) -> None:
        """A line for the person (to stderr under ``--json``, so that stdout stays parseable)."""
        if self.as_json:
            click.echo(message, err=True)
        elif self.terminal:
            self.out.print(message, markup=False)
        else:
            click.echo(message)

    def success(self, message: str) -> None:
        """A line saying something was done (green on a terminal)."""
        if self.terminal and not self.as_json:
            self.out.print(f"[green]✓[/green] {message}", markup=True)
        else:
            self.say(message)

    def error(self, message: str, hint: str = "") -> None:
        """An error and its hint on stderr (red on a terminal)."""
        if self.err.is_terminal:
            from rich.markup import escape  # noqa: PLC0415

            self.err.print(f"[red bold]error:[/red bold] {escape(message)}")
            if hint:
                self.err.print(f"[dim]hint:[/dim] {escape(hint)}")
        else:
            click.echo(f"error: {message}", err=True)
            if hint:
                click.echo(f"hint: {hint}", err=True)


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal."""
    return sys.stdout.isatty()
