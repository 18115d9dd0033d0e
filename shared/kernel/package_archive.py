"""Agent package archives (issue 14): what the control plane accepts and the data plane unpacks.

A package is the agent's project as one archive: a gzip'd tar (sdist style,
``name-version/manifest.yaml``, ``name-version/pyproject.toml``, ``name-version/<pkg>/...``) or a
zip (a wheel, or a zip of the project). Its ``manifest.yaml`` sits at the archive's root or in its
single top-level directory (the project root).

The same checks run twice: when a developer uploads a package (``inspect_package``: refused with
a 4xx, nothing stored) and when a data plane unpacks it (``extract_package``: the digest first,
then everything again, then extraction by our own hand, never ``extractall``). Refused: what is
not such an archive, over the limits (packed, unpacked, members), member paths that leave the root
(``../``, absolute, drive letters, backslashes), links of either kind, devices and FIFOs, a missing
manifest or one that is not a mapping.

Standard library and PyYAML only (plus the kernel's errors): the data plane imports this module,
and the runner image ships nothing else of ``shared`` (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import os
import re
import stat
import tarfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import yaml

from shared.kernel.errors import AppError, ErrorCode

MAX_PACKAGE_BYTES = 50 * 1024 * 1024
"""The largest package accepted, as uploaded (50 MiB)."""
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
"""The most its files may hold once unpacked (200 MiB): a small archive may not expand past it."""
MAX_PACKAGE_FILES = 10_000
"""The most members (files and directories) a package may hold."""
MAX_PACKAGE_MANIFEST_BYTES = 256 * 1024
"""The largest ``manifest.yaml`` read from a package."""
MANIFEST_FILE = "manifest.yaml"

PackageKind = Literal["tar.gz", "zip"]

_CHUNK = 1024 * 1024
#: What reading a damaged zip member raises: a bad header or CRC-32, a short or corrupt deflate
#: stream, and ``NotImplementedError``, which is how ``zipfile`` refuses a member packed with a
#: compression method it does not implement (an unreadable package: a 422, like the others).
_DAMAGED_ZIP = (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error)
_DRIVE = re.compile(r"^[A-Za-z]:")
# The tar stream of a package within the limits: its files, plus a header and padding per member.
_MAX_TAR_STREAM = MAX_UNPACKED_BYTES + 1024 * (MAX_PACKAGE_FILES + 2)


class PackageError(AppError):
    """A package refused, with why: 413 when it is too large, 422 otherwise."""

    status = 422
    code = ErrorCode.PACKAGE_NOT_ARCHIVE

    def __init__(self, code: ErrorCode, message: str, *, path: str | None = None) -> None:
        super().__init__(message, code=code,
                         details=[{"path": path, "message": message}] if path is not None else None)
        if code == ErrorCode.PACKAGE_TOO_LARGE:
            self.status = 413


@dataclass(frozen=True)
class PackageInfo:
    """What an accepted package is."""

    sha256: str
    """The archive's SHA-256, lowercase hex: its identity in the artifact store."""
    size: int
    """The archive's size in bytes."""
    kind: PackageKind
    root: str
    """The project root inside the archive: its single top-level directory, or "" (files at the root)."""
    manifest: dict[str, Any]
    """``<root>/manifest.yaml``, parsed (YAML safe load); validated as a manifest by the catalog."""
    manifest_text: str
    """The same manifest as the archive holds it (the catalog validates the text, strictly)."""
    files: tuple[str, ...]
    """Every regular file's path, relative to the archive's root, sorted."""


@dataclass(frozen=True)
class _Member:
    path: str  # normalised, relative, "/"-separated, no trailing "/"
    is_dir: bool
    size: int


def package_digest(data: bytes) -> str:
    """The SHA-256 of ``data``, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def inspect_package(data: bytes) -> PackageInfo:
    """Check ``data`` as an agent package and say what it holds; :class:`PackageError` if refused."""
    if len(data) > MAX_PACKAGE_BYTES:
        raise PackageError(ErrorCode.PACKAGE_TOO_LARGE,
                           f"the package is {len(data):,} bytes; a package may be at most {MAX_PACKAGE_BYTES:,} bytes")
    kind = _kind_of(data)
    with _open(data, kind) as archive:
        members = archive.members()
        root = _project_root(members)
        manifest_path = f"{root}/{MANIFEST_FILE}" if root else MANIFEST_FILE
        text = archive.read_text(manifest_path, MAX_PACKAGE_MANIFEST_BYTES)
        archive.verify()
    manifest = _parse_manifest(text, manifest_path)
    files = tuple(sorted(m.path for m in members if not m.is_dir))
    return PackageInfo(sha256=package_digest(data), size=len(data), kind=kind, root=root, manifest=manifest,
                       manifest_text=text, files=files)


def extract_package(data: bytes, dest: Path, *, expected_sha256: str) -> Path:
    """Unpack a package into ``dest`` (created if missing; meant to be empty) after checking that its
    SHA-256 is ``expected_sha256`` and every check of :func:`inspect_package` again; returns the
    project root (``dest/<root>``). Files are written by hand (mode 0644, or 0755 when executable
    in the archive); nothing but plain files and directories is ever created."""
    actual = package_digest(data)
    if not hmac.compare_digest(actual, expected_sha256.strip().lower()):
        raise PackageError(ErrorCode.PACKAGE_DIGEST_MISMATCH,
                           f"the package's sha256 is {actual}, not the expected {expected_sha256}")
    info = inspect_package(data)
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    try:
        with _open(data, info.kind) as archive:
            _write_members(archive, base)
    except (*_DAMAGED_ZIP, tarfile.TarError) as exc:
        raise _not_archive(info.kind, exc) from None
    return base / info.root if info.root else base


def _write_members(archive: _Archive, base: Path) -> int:
    """Write every member under ``base``; the bytes written."""
    written = 0
    for member, executable, stream in archive.contents():
        target = (base / member.path).resolve()
        if target != base and base not in target.parents:  # cannot happen after the checks; never trust it
            raise PackageError(ErrorCode.PACKAGE_PATH_ESCAPES, "a member leaves the package", path=member.path)
        if member.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL | O_NOFOLLOW: never write through something already there, a link least of all.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                if written > MAX_UNPACKED_BYTES:
                    raise _too_large_unpacked()
                out.write(chunk)
    return written


# -- the checks ---------------------------------------------------------------------------------


def _kind_of(data: bytes) -> PackageKind:
    if data[:2] == b"\x1f\x8b":
        return "tar.gz"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    raise PackageError(ErrorCode.PACKAGE_NOT_ARCHIVE,
                       "the package is not an archive: send a gzip'd tar (.tar.gz) or a zip (.zip, .whl)")


def _not_archive(kind: str, reason: object) -> PackageError:
    return PackageError(ErrorCode.PACKAGE_NOT_ARCHIVE, f"the package is not a readable {kind} archive: {reason}")


def _too_large_unpacked() -> PackageError:
    return PackageError(ErrorCode.PACKAGE_TOO_LARGE,
                        f"the package's files hold more than {MAX_UNPACKED_BYTES:,} bytes once unpacked")


def _member_path(name: str) -> str:
    """The member's path, normalised, or a refusal when it could land outside the project."""
    shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\\" in name or "\x00" in name:
        raise PackageError(ErrorCode.PACKAGE_PATH_ESCAPES, f"the member path {shown!r} holds a backslash or NUL",
                           path=shown)
    if name.startswith("/") or _DRIVE.match(name):
        raise PackageError(ErrorCode.PACKAGE_PATH_ESCAPES, f"the member path {shown!r} is absolute", path=shown)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise PackageError(ErrorCode.PACKAGE_PATH_ESCAPES, f"the member path {shown!r} is not UTF-8",
                           path=shown) from None
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise PackageError(ErrorCode.PACKAGE_PATH_ESCAPES, f"the member path {shown!r} leaves the package root",
                           path=shown)
    return "/".join(parts)


def _checked(members: list[_Member]) -> list[_Member]:
    """The members, once the archive as a whole is within the limits and well formed."""
    if sum(m.size for m in members) > MAX_UNPACKED_BYTES:
        raise _too_large_unpacked()
    files = [m.path for m in members if not m.is_dir]
    if len(set(files)) != len(files):
        twice = next(p for p in files if files.count(p) > 1)
        raise PackageError(ErrorCode.PACKAGE_NOT_ARCHIVE, f"the member {twice!r} appears twice", path=twice)
    parents = {str(p) for f in files for p in PurePosixPath(f).parents if str(p) != "."}
    clash = next((f for f in files if f in parents), None)
    if clash is not None:
        raise PackageError(ErrorCode.PACKAGE_NOT_ARCHIVE, f"{clash!r} is both a file and a directory", path=clash)
    return members


def _project_root(members: list[_Member]) -> str:
    files = {m.path for m in members if not m.is_dir}
    if MANIFEST_FILE in files:
        return ""
    tops = {m.path.split("/", 1)[0] for m in members if m.path}
    if len(tops) == 1:
        (top,) = tops
        if f"{top}/{MANIFEST_FILE}" in files:
            return top
    raise PackageError(ErrorCode.PACKAGE_NO_MANIFEST,
                       f"the package has no {MANIFEST_FILE} at its root or in its single top-level directory")


def _parse_manifest(text: str, path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise PackageError(ErrorCode.INVALID_MANIFEST, f"{path} is not valid YAML: {exc}", path=path) from None
    if not isinstance(data, dict):
        raise PackageError(ErrorCode.INVALID_MANIFEST, f"{path} must be a mapping of manifest fields", path=path)
    return data


# -- the two formats, behind one small interface -------------------------------------------------


class _Archive(ABC):
    @abstractmethod
    def members(self) -> list[_Member]:
        """The archive's members, checked."""

    @abstractmethod
    def read_text(self, path: str, limit: int) -> str:
        """One member's text, at most ``limit`` bytes."""

    def verify(self) -> None:  # noqa: B027 - a real default: a tar.gz needs nothing more
        """Read every member to its end (their checksums are checked on the way); refuse if one is
        damaged. A tar.gz needs nothing more: the gzip stream's CRC was checked while counting it."""

    @abstractmethod
    def contents(self) -> Iterator[tuple[_Member, bool, IO[bytes]]]:
        """Each member with whether it is executable and a stream of its bytes (empty for a directory)."""

    @abstractmethod
    def close(self) -> None:
        """Release the archive."""

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(data: bytes, kind: PackageKind) -> _Archive:
    return _TarArchive(data) if kind == "tar.gz" else _ZipArchive(data)


def _read_capped(stream: IO[bytes], limit: int, path: str) -> str:
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise PackageError(ErrorCode.INVALID_MANIFEST, f"{path} is over {limit:,} bytes", path=path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PackageError(ErrorCode.INVALID_MANIFEST, f"{path} is not UTF-8 text", path=path) from None


_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


class _TarArchive(_Archive):
    def __init__(self, data: bytes) -> None:
        # A gzip bomb (or a huge PAX header, which tarfile reads whole) is stopped here, before
        # tarfile reads anything: the stream is decompressed once, counted, and thrown away.
        total = 0
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if total > _MAX_TAR_STREAM:
                        raise _too_large_unpacked()
        except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
            raise _not_archive("tar.gz", exc) from None
        try:
            self._tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")  # noqa: SIM115 - closed by close()
            self._infos = self._read_infos()
        except PackageError:
            raise
        except _TAR_ERRORS as exc:
            raise _not_archive("tar.gz", exc) from None
        self._members = _checked([self._member(info) for info in self._infos])

    def _read_infos(self) -> list[tarfile.TarInfo]:
        infos = []
        while (info := self._tar.next()) is not None:
            infos.append(info)
            if len(infos) > MAX_PACKAGE_FILES:
                raise PackageError(ErrorCode.PACKAGE_TOO_MANY_FILES,
                                   f"the package holds more than {MAX_PACKAGE_FILES:,} members")
        return infos

    @staticmethod
    def _member(info: tarfile.TarInfo) -> _Member:
        path = _member_path(info.name)
        if info.issym() or info.islnk():
            raise PackageError(ErrorCode.PACKAGE_LINK, f"the member {path!r} is a link; a package holds only "
                               "files and directories", path=path)
        if not (info.isfile() or info.isdir()):
            raise PackageError(ErrorCode.PACKAGE_SPECIAL_FILE, f"the member {path!r} is a device, FIFO or other "
                               "special file; a package holds only files and directories", path=path)
        if info.isfile() and not path:
            raise PackageError(ErrorCode.PACKAGE_PATH_ESCAPES, "a file member has an empty path", path="")
        return _Member(path=path, is_dir=info.isdir(), size=info.size if info.isfile() else 0)

    def members(self) -> list[_Member]:
        return self._members

    def _stream(self, info: tarfile.TarInfo) -> IO[bytes]:
        stream = self._tar.extractfile(info)
        if stream is None:  # only for non-files, which were refused
            raise PackageError(ErrorCode.PACKAGE_SPECIAL_FILE, f"{info.name!r} is not a file", path=info.name)
        return stream

    def read_text(self, path: str, limit: int) -> str:
        info = next(i for i, m in zip(self._infos, self._members, strict=True) if m.path == path and not m.is_dir)
        try:
            return _read_capped(self._stream(info), limit, path)
        except _TAR_ERRORS as exc:
            raise _not_archive("tar.gz", exc) from None

    def contents(self) -> Iterator[tuple[_Member, bool, IO[bytes]]]:
        for info, member in zip(self._infos, self._members, strict=True):
            if not member.path:
                continue
            stream = io.BytesIO() if member.is_dir else self._stream(info)
            yield member, bool(info.mode & 0o111) and not member.is_dir, stream

    def close(self) -> None:
        self._tar.close()


class _ZipArchive(_Archive):
    def __init__(self, data: bytes) -> None:
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
            self._infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
            raise _not_archive("zip", exc) from None
        if len(self._infos) > MAX_PACKAGE_FILES:
            raise PackageError(ErrorCode.PACKAGE_TOO_MANY_FILES,
                               f"the package holds more than {MAX_PACKAGE_FILES:,} members")
        self._members = _checked([self._member(info) for info in self._infos])

    @staticmethod
    def _member(info: zipfile.ZipInfo) -> _Member:
        path = _member_path(info.filename.rstrip("/") if info.is_dir() else info.filename)
        mode = info.external_attr >> 16  # the Unix mode, when the zip was made on Unix
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise PackageError(ErrorCode.PACKAGE_LINK, f"the member {path!r} is a link; a package holds only "
                               "files and directories", path=path)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise PackageError(ErrorCode.PACKAGE_SPECIAL_FILE, f"the member {path!r} is a device, FIFO or other "
                               "special file; a package holds only files and directories", path=path)
        if info.flag_bits & 0x1:
            raise PackageError(ErrorCode.PACKAGE_NOT_ARCHIVE, f"the member {path!r} is encrypted", path=path)
        if not info.is_dir() and not path:
            raise PackageError(ErrorCode.PACKAGE_PATH_ESCAPES, "a file member has an empty path", path="")
        # zipfile never returns more than file_size bytes of a member, so the declared sizes bound
        # what unpacking writes.
        return _Member(path=path, is_dir=info.is_dir(), size=0 if info.is_dir() else info.file_size)

    def members(self) -> list[_Member]:
        return self._members

    def read_text(self, path: str, limit: int) -> str:
        info = next(i for i, m in zip(self._infos, self._members, strict=True) if m.path == path and not m.is_dir)
        try:
            with self._zip.open(info) as stream:
                return _read_capped(stream, limit, path)
        except (*_DAMAGED_ZIP, OSError) as exc:
            raise _not_archive("zip", exc) from None

    def verify(self) -> None:
        # A zip's members are compressed one by one and carry their own CRC-32: read them all once,
        # so that a damaged one is refused at upload rather than when a data plane unpacks it. The
        # reads are bounded by the declared sizes (checked above).
        try:
            for info, member in zip(self._infos, self._members, strict=True):
                if member.is_dir:
                    continue
                with self._zip.open(info) as stream:
                    while stream.read(_CHUNK):
                        pass
        except (*_DAMAGED_ZIP, OSError) as exc:
            raise _not_archive("zip", exc) from None

    def contents(self) -> Iterator[tuple[_Member, bool, IO[bytes]]]:
        for info, member in zip(self._infos, self._members, strict=True):
            if not member.path:
                continue
            if member.is_dir:
                yield member, False, io.BytesIO()
                continue
            try:
                with self._zip.open(info) as stream:
                    yield member, bool((info.external_attr >> 16) & 0o111), stream
            except _DAMAGED_ZIP as exc:  # not OSError: writing what is yielded is the caller's
                raise _not_archive("zip", exc) from None

    def close(self) -> None:
        self._zip.close()
