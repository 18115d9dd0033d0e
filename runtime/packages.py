"""The data plane's cache of agent packages (issue 14): fetched by digest, verified, installed once.

``PackageCache.ensure(sha256)`` returns the folder of an installed package:

* ``project/``: the agent project, extracted from the archive the control plane stores
  (``GET /dataplane/packages/{sha256}``, with the data plane's key) after its SHA-256 was checked
  against the digest the task names: a package whose bytes differ is refused, never run;
* ``deps/``: the requirements of its ``pyproject.toml`` that the runner's environment does not
  already satisfy, installed by pip as wheels only (``--only-binary=:all:``: no package's build
  script ever runs on the data plane), from ``MARKETPLACE_PACKAGE_INDEX_URL`` when it is set.

Each digest is installed once per runner: the first run takes a file lock for its digest, the
installation goes to a temporary folder renamed into place when complete, and every other run of
the digest (concurrent ones wait on the lock) finds it ready. The folder is readable by every user
(runs execute under their own uids) and writable only by the runner.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from shared.kernel.errors import ErrorCode
from shared.kernel.package_archive import PackageError, extract_package

_MARK = ".installed.json"


class PackageUnavailable(Exception):
    """The package cannot be fetched, verified or installed: the run cannot start."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class InstalledPackage:
    """An installed package: its project folder and the folders to put first on ``sys.path``."""

    root: Path
    project: Path
    paths: tuple[str, ...]


def unsatisfied(requirements: list[str]) -> list[str]:
    """The requirements the running environment does not satisfy (markers applied)."""
    missing = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise PackageUnavailable(f"pyproject.toml: dependency {text!r} is not a requirement: {exc}") from exc
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def project_requirements(project: Path) -> list[str]:
    """``[project].dependencies`` of the project's ``pyproject.toml`` (none without one)."""
    path = project / "pyproject.toml"
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PackageUnavailable(f"pyproject.toml cannot be read: {exc}") from exc
    dependencies = (data.get("project") or {}).get("dependencies") or []
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise PackageUnavailable("pyproject.toml: [project].dependencies must be a list of strings")
    return dependencies


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _readable_by_all(root: Path) -> None:
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o755)  # noqa: S103 - runs execute under other uids and must read it
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
        for name in dirs:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                raise PackageUnavailable(f"installed dependencies contain a link: {name}")


class PackageCache:
    """Installed packages under ``root`` (one folder per digest)."""

    def __init__(self, root: Path, fetch: Callable[[str], bytes] | None, *, index_url: str | None = None,
                 pip_timeout: float = 600.0) -> None:
        self.root = Path(root)
        self.fetch = fetch
        self.index_url = index_url if index_url is not None else os.environ.get("MARKETPLACE_PACKAGE_INDEX_URL")
        self.pip_timeout = pip_timeout

    def _installed(self, sha256: str) -> InstalledPackage | None:
        folder = self.root / sha256
        mark = folder / _MARK
        if not mark.is_file():
            return None
        info = json.loads(mark.read_text(encoding="utf-8"))
        project = folder / info["project"]
        paths = [str(project)] + ([str(folder / "deps")] if info.get("deps") else [])
        return InstalledPackage(folder, project, tuple(paths))

    def ensure(self, sha256: str) -> InstalledPackage:
        """The installed package of that digest, fetching and installing it the first time."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise PackageUnavailable(f"package digest {sha256!r} is not a SHA-256")
        ready = self._installed(sha256)
        if ready is not None:
            return ready
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # noqa: S103 - runs execute under other uids and must read it
        with _locked(self.root / f".{sha256}.lock"):
            ready = self._installed(sha256)
            if ready is not None:
                return ready
            self._install(sha256)
            installed = self._installed(sha256)
            assert installed is not None
            return installed

    def _install(self, sha256: str) -> None:
        if self.fetch is None:
            raise PackageUnavailable("this runner cannot fetch agent packages")
        try:
            data = self.fetch(sha256)
        except Exception as exc:
            raise PackageUnavailable(f"fetching package sha256:{sha256} failed: {exc}",
                                     retryable=bool(getattr(exc, "retryable", True))) from exc
        staging = self.root / f".{sha256}.{os.getpid()}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            try:
                project = extract_package(data, staging / "src", expected_sha256=sha256)
            except PackageError as exc:
                if exc.code == ErrorCode.PACKAGE_DIGEST_MISMATCH:
                    raise PackageUnavailable(f"package sha256:{sha256} refused: the fetched bytes do not match its "
                                             f"digest ({exc})") from exc
                raise PackageUnavailable(f"package sha256:{sha256} refused: {exc}") from exc
            missing = unsatisfied(project_requirements(project))
            if missing:
                self._pip(missing, staging / "deps")
            _readable_by_all(staging)
            (staging / _MARK).write_text(json.dumps({"project": str(project.relative_to(staging)),
                                                     "deps": bool(missing)}), encoding="utf-8")
            os.chmod(staging / _MARK, 0o644)
            os.replace(staging, self.root / sha256)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _pip(self, requirements: list[str], target: Path) -> None:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--no-input", "--only-binary=:all:", "--target", str(target)]
        if self.index_url:
            command += ["--index-url", self.index_url]
        try:
            subprocess.run([*command, "--", *requirements], check=True, capture_output=True, text=True,  # noqa: S603
                           timeout=self.pip_timeout, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                          "HOME": str(target.parent)})
        except subprocess.CalledProcessError as exc:
            tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
            raise PackageUnavailable(f"installing the package's dependencies ({', '.join(requirements)}) failed: "
                                     + " ".join(tail)) from exc
        except subprocess.TimeoutExpired as exc:
            raise PackageUnavailable("installing the package's dependencies timed out", retryable=True) from exc
