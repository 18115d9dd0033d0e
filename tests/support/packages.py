"""Agent package archives for tests (issue 14): well-formed ones and each kind of hostile one.

Built with tarfile/zipfile in memory. A "hostile" builder adds one bad member to an otherwise
valid project, so a test can tell that the refusal is about that member.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Callable
from typing import Any

import yaml


def project_files(manifest: dict[str, Any], *, package: str = "acme_agent") -> dict[str, bytes]:
    """The files of a small agent project, relative to its root."""
    return {
        "manifest.yaml": yaml.safe_dump(manifest, sort_keys=False).encode(),
        "pyproject.toml": (f'[project]\nname = "{manifest.get("name", "agent")}"\n'
                           f'version = "{manifest.get("version", "0.0.0")}"\n').encode(),
        f"{package}/__init__.py": b"",
        f"{package}/graph.py": b"def build_graph():\n    raise NotImplementedError\n",
    }


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE,
             linkname: str = "", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    if data is not None and kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def tar_gz(files: dict[str, bytes], *, root: str | None = "agent-1.0.0",
           extra: Callable[[tarfile.TarFile], None] | None = None) -> bytes:
    """A gzip'd tar of ``files`` under ``root/`` (None: at the archive's root), then ``extra``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if root:
            _tar_add(tar, root, kind=tarfile.DIRTYPE, mode=0o755)
        for name, data in files.items():
            _tar_add(tar, f"{root}/{name}" if root else name, data)
        if extra is not None:
            extra(tar)
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes], *, root: str | None = None,
              extra: Callable[[zipfile.ZipFile], None] | None = None) -> bytes:
    """A zip of ``files`` (under ``root/`` when given), then ``extra``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{root}/{name}" if root else name, data)
        if extra is not None:
            extra(archive)
    return buffer.getvalue()


def package(manifest: dict[str, Any], **kwargs: Any) -> bytes:
    """A valid sdist-style package of a project with ``manifest``."""
    return tar_gz(project_files(manifest), **kwargs)


# -- hostile packages, one bad thing each (the bad-package table of issue 14) --------------------


def with_parent_path(manifest: dict[str, Any]) -> bytes:
    return tar_gz(project_files(manifest), extra=lambda t: _tar_add(t, "agent-1.0.0/../../evil.py", b"x"))


def with_absolute_path(manifest: dict[str, Any]) -> bytes:
    return tar_gz(project_files(manifest), extra=lambda t: _tar_add(t, "/etc/evil.conf", b"x"))


def with_symlink(manifest: dict[str, Any]) -> bytes:
    return tar_gz(project_files(manifest),
                  extra=lambda t: _tar_add(t, "agent-1.0.0/key", kind=tarfile.SYMTYPE, linkname="/etc/passwd"))


def with_hardlink(manifest: dict[str, Any]) -> bytes:
    return tar_gz(project_files(manifest),
                  extra=lambda t: _tar_add(t, "agent-1.0.0/key", kind=tarfile.LNKTYPE, linkname="/etc/passwd"))


def with_device(manifest: dict[str, Any]) -> bytes:
    return tar_gz(project_files(manifest), extra=lambda t: _tar_add(t, "agent-1.0.0/disk", kind=tarfile.BLKTYPE))


def with_fifo(manifest: dict[str, Any]) -> bytes:
    return tar_gz(project_files(manifest), extra=lambda t: _tar_add(t, "agent-1.0.0/pipe", kind=tarfile.FIFOTYPE))


def without_manifest(manifest: dict[str, Any]) -> bytes:
    files = project_files(manifest)
    del files["manifest.yaml"]
    return tar_gz(files)


def zip_with_symlink(manifest: dict[str, Any]) -> bytes:
    def add(archive: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo("key")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return zip_bytes(project_files(manifest), extra=add)


def zip_bomb(manifest: dict[str, Any], *, size: int) -> bytes:
    """A valid project plus one member of ``size`` zero bytes (a few KiB once compressed)."""
    def add(archive: zipfile.ZipFile) -> None:
        with archive.open("zeros.bin", "w", force_zip64=True) as out:
            chunk = bytes(1024 * 1024)
            for _ in range(size // len(chunk)):
                out.write(chunk)
    return zip_bytes(project_files(manifest), extra=add)
