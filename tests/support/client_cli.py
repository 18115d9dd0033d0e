"""A real ``marketplace up`` on a fresh data directory, and the client CLI run against it as a
user would (its own config and cache folders, so nothing of the developer's is read or written)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.kernel.net import free_port
from support.cli import MARKETPLACE, read_until_ready


@dataclass
class Platform:
    """A running ``marketplace up`` and a user's folders."""

    url: str
    data_dir: Path
    home: Path
    proc: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``marketplace ARGS`` as the user (piped, so plain text)."""
        result = subprocess.run([str(MARKETPLACE), *args], capture_output=True, text=True, env=self.env,
                                cwd=self.home, timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, f"marketplace {' '.join(args)}: {result.returncode}\n" \
                                           f"{result.stdout}\n{result.stderr}"
        return result

    def cli_json(self, *args: str) -> Any:
        """``marketplace ARGS --json``, parsed."""
        return json.loads(self.cli(*args, "--json").stdout)

    def config(self) -> dict[str, Any]:
        """The client's stored config."""
        return dict(json.loads((self.home / "config" / "config.json").read_text()))


def start_platform(prefix: str) -> Platform:
    """``marketplace up`` on a fresh data directory and a free port, with one local worker."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    home = root / "home"
    home.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MARKETPLACE_CONFIG_DIR": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "xdg-config"),
           "MARKETPLACE_URL": f"http://127.0.0.1:{port}"}
    env.pop("MARKETPLACE_DATA_DIR", None)
    env.pop("MARKETPLACE_DATABASE_URL", None)
    platform = Platform(url=f"http://127.0.0.1:{port}", data_dir=root / "data", home=home, env=env)
    platform.proc = subprocess.Popen([str(MARKETPLACE), "up", "--port", str(port), "--data-dir", str(platform.data_dir),
                                      "--workers", "1", "--http-workers", "1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        read_until_ready(platform.proc)
    except BaseException:
        stop_platform(platform)
        raise
    # Keep reading what it prints, so that a full pipe never blocks it.
    threading.Thread(target=platform.proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
    return platform


def stop_platform(platform: Platform) -> None:
    """Stop ``up`` (SIGTERM, as Ctrl-C) and remove its folders."""
    proc = platform.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    shutil.rmtree(platform.data_dir.parent, ignore_errors=True)
