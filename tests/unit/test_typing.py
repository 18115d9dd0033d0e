"""mypy strict over every product package (``[tool.mypy]`` in pyproject.toml names them)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = {"functions", "jobs", "byoc", "shared", "runtime"}


def test_mypy_checks_every_product_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert config["strict"] is True
    assert PRODUCT_PACKAGES <= set(config["packages"])


def test_mypy_strict_is_clean() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # The packages come from pyproject.toml; the cache (gitignored) keeps a second run to a second or two.
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"mypy found type errors:\n{done.stdout}\n{done.stderr}"
