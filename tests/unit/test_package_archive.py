"""Agent package archives (issue 14): what is accepted, what is refused and why, safe extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from support import packages

from shared.kernel import package_archive
from shared.kernel.errors import ErrorCode
from shared.kernel.package_archive import MAX_PACKAGE_BYTES, PackageError, extract_package, inspect_package

MANIFEST = {"name": "acme-agent", "version": "1.0.0", "display_name": "Acme"}


def refused(data: bytes) -> PackageError:
    with pytest.raises(PackageError) as caught:
        inspect_package(data)
    return caught.value


def test_an_sdist_style_tar_gz_is_described():
    data = packages.package(MANIFEST)
    info = inspect_package(data)
    assert info.kind == "tar.gz"
    assert info.root == "agent-1.0.0"
    assert info.manifest == MANIFEST
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert info.files == ("agent-1.0.0/acme_agent/__init__.py", "agent-1.0.0/acme_agent/graph.py",
                          "agent-1.0.0/manifest.yaml", "agent-1.0.0/pyproject.toml")


def test_a_zip_with_files_at_its_root_or_in_one_directory():
    flat = inspect_package(packages.zip_bytes(packages.project_files(MANIFEST)))
    assert (flat.kind, flat.root, flat.manifest) == ("zip", "", MANIFEST)
    nested = inspect_package(packages.zip_bytes(packages.project_files(MANIFEST), root="proj"))
    assert nested.root == "proj"
    assert "proj/acme_agent/graph.py" in nested.files


def test_a_tar_made_from_dot_is_accepted():
    data = packages.tar_gz({f"./{k}": v for k, v in packages.project_files(MANIFEST).items()}, root=None)
    assert inspect_package(data).root == ""


@pytest.mark.parametrize("data", [b"", b"hello, this is text", b"\x1f\x8bnot really gzip",
                                  gzip.compress(b"gzip but not a tar" * 40), b"PK\x03\x04truncated zip"])
def test_what_is_not_an_archive(data):
    error = refused(data)
    assert (error.status, error.code) == (422, ErrorCode.PACKAGE_NOT_ARCHIVE)


def test_over_the_size_limit_is_413():
    error = refused(b"\x1f\x8b" + bytes(MAX_PACKAGE_BYTES))
    assert (error.status, error.code) == (413, ErrorCode.PACKAGE_TOO_LARGE)


def test_a_zip_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(package_archive, "MAX_UNPACKED_BYTES", 1024 * 1024)
    error = refused(packages.zip_bomb(MANIFEST, size=2 * 1024 * 1024))
    assert (error.status, error.code) == (413, ErrorCode.PACKAGE_TOO_LARGE)


def test_a_gzip_bomb_is_refused_before_tarfile_reads_it(monkeypatch):
    monkeypatch.setattr(package_archive, "_MAX_TAR_STREAM", 1024 * 1024)
    files = {**packages.project_files(MANIFEST), "zeros.bin": bytes(2 * 1024 * 1024)}
    error = refused(packages.tar_gz(files))
    assert error.code == ErrorCode.PACKAGE_TOO_LARGE


def test_too_many_members(monkeypatch):
    monkeypatch.setattr(package_archive, "MAX_PACKAGE_FILES", 5)
    files = {**packages.project_files(MANIFEST), **{f"data/{i}.txt": b"x" for i in range(5)}}
    assert refused(packages.tar_gz(files)).code == ErrorCode.PACKAGE_TOO_MANY_FILES
    assert refused(packages.zip_bytes(files)).code == ErrorCode.PACKAGE_TOO_MANY_FILES


@pytest.mark.parametrize(("build", "code"), [
    (packages.with_parent_path, ErrorCode.PACKAGE_PATH_ESCAPES),
    (packages.with_absolute_path, ErrorCode.PACKAGE_PATH_ESCAPES),
    (packages.with_symlink, ErrorCode.PACKAGE_LINK),
    (packages.with_hardlink, ErrorCode.PACKAGE_LINK),
    (packages.with_device, ErrorCode.PACKAGE_SPECIAL_FILE),
    (packages.with_fifo, ErrorCode.PACKAGE_SPECIAL_FILE),
    (packages.zip_with_symlink, ErrorCode.PACKAGE_LINK),
    (packages.without_manifest, ErrorCode.PACKAGE_NO_MANIFEST),
])
def test_hostile_packages_are_refused_with_their_reason(build, code):
    error = refused(build(MANIFEST))
    assert (error.status, error.code) == (422, code)
    assert error.body()["error"]["message"]


@pytest.mark.parametrize("name", ["..\\evil.py", "C:/evil.py", "c:evil.py", "a/../../b.py", "/abs.py"])
def test_zip_member_paths_that_leave_the_root(name):
    files = {**packages.project_files(MANIFEST), name: b"x"}
    assert refused(packages.zip_bytes(files)).code == ErrorCode.PACKAGE_PATH_ESCAPES


def test_a_manifest_that_is_not_a_mapping():
    files = {**packages.project_files(MANIFEST), "manifest.yaml": b"- just\n- a list\n"}
    assert refused(packages.tar_gz(files)).code == ErrorCode.INVALID_MANIFEST
    files["manifest.yaml"] = b"name: [unclosed\n"
    assert refused(packages.tar_gz(files)).code == ErrorCode.INVALID_MANIFEST


def test_the_manifest_must_be_at_the_project_root():
    files = packages.project_files(MANIFEST)
    # Two top-level directories, the manifest in one of them: which is the project?
    two_roots = {f"a/{k}": v for k, v in files.items()} | {"b/other.txt": b"x"}
    assert refused(packages.zip_bytes(two_roots)).code == ErrorCode.PACKAGE_NO_MANIFEST


def test_a_member_twice_or_a_file_that_is_also_a_directory():
    def twice(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("agent-1.0.0/pyproject.toml")
        tar.addfile(info, io.BytesIO(b""))
    assert refused(packages.package(MANIFEST, extra=twice)).code == ErrorCode.PACKAGE_NOT_ARCHIVE
    files = {**packages.project_files(MANIFEST), "acme_agent/graph.py/x": b"x"}
    assert refused(packages.zip_bytes(files)).code == ErrorCode.PACKAGE_NOT_ARCHIVE


# -- extraction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_extract_checks_the_digest_then_writes_the_files(tmp_path: Path, kind):
    files = packages.project_files(MANIFEST)
    data = packages.package(MANIFEST) if kind == "tar.gz" else packages.zip_bytes(files, root="agent-1.0.0")
    root = extract_package(data, tmp_path / "out", expected_sha256=hashlib.sha256(data).hexdigest())
    assert root == (tmp_path / "out" / "agent-1.0.0").resolve()
    for name, content in files.items():
        assert (root / name).read_bytes() == content
    assert not (root / "acme_agent" / "graph.py").is_symlink()
    assert (root / "manifest.yaml").stat().st_mode & 0o777 == 0o644


def test_extract_refuses_another_digest_before_anything(tmp_path: Path):
    data = packages.package(MANIFEST)
    with pytest.raises(PackageError) as caught:
        extract_package(data, tmp_path / "out", expected_sha256="0" * 64)
    assert caught.value.code == ErrorCode.PACKAGE_DIGEST_MISMATCH
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("build", [packages.with_parent_path, packages.with_absolute_path, packages.with_symlink,
                                   packages.with_hardlink, packages.with_device, packages.with_fifo])
def test_extract_refuses_hostile_packages_and_writes_nothing(tmp_path: Path, build):
    data = build(MANIFEST)
    with pytest.raises(PackageError):
        extract_package(data, tmp_path / "out", expected_sha256=hashlib.sha256(data).hexdigest())
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_extract_keeps_the_executable_bit(tmp_path: Path):
    def script(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("agent-1.0.0/run.sh")
        info.size, info.mode = 3, 0o755
        tar.addfile(info, io.BytesIO(b"#!\n"))
    data = packages.package(MANIFEST, extra=script)
    root = extract_package(data, tmp_path, expected_sha256=hashlib.sha256(data).hexdigest())
    assert (root / "run.sh").stat().st_mode & 0o777 == 0o755


def test_a_damaged_zip_member_is_refused_at_inspection():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in packages.project_files(MANIFEST).items():
            archive.writestr(name, content)
        archive.writestr("data.txt", b"CORRUPTME" * 100)
    damaged = buffer.getvalue().replace(b"CORRUPTME", b"XORRUPTME", 1)  # its CRC-32 no longer matches
    assert refused(damaged).code == ErrorCode.PACKAGE_NOT_ARCHIVE


def test_a_zip_member_in_a_compression_method_zipfile_lacks_is_refused_not_crashed():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, content in packages.project_files(MANIFEST).items():
            archive.writestr(name, content)
        archive.writestr("data.txt", b"payload")
    data = bytearray(buffer.getvalue())
    # Method 99 (AE-x encryption) in data.txt's local header and its central directory entry:
    # zipfile raises NotImplementedError when the member is read.
    name = b"data.txt"
    local = data.find(b"PK\x03\x04" + bytes(4))
    while data[local + 30:local + 30 + len(name)] != name:
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    data[local + 8:local + 10] = (99).to_bytes(2, "little")
    data[central + 10:central + 12] = (99).to_bytes(2, "little")
    error = refused(bytes(data))
    assert error.code == ErrorCode.PACKAGE_NOT_ARCHIVE
