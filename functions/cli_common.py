"""What every ``marketplace`` command shares: the settings it runs with and how it prints a line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.kernel.settings import Settings


def settings_for(data_dir: str | Path | None = None, host: str | None = None, port: int | None = None) -> Settings:
    """The platform's settings (environment first), with the data directory and public URL a
    command line gave."""
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = Path(data_dir)
    if host and port:
        overrides["public_url"] = f"http://{host}:{port}"
    return Settings(**overrides)


def say(message: str) -> None:
    """One line on standard output, flushed (the supervisor's lines are read as they come)."""
    print(message, flush=True)
