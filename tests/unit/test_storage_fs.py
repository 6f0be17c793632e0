"""The repository contract, run against every storage driver (fs, and s3 on moto's server),
plain and wrapped by the encrypting repository (a passphrase on fs, a KMS key on s3).

Test bodies take the `repo` fixture and use the Repository interface; checks
that look at the driver's own backing store (temporary files on disk, empty
directories, permissions) are guarded by `fs_root(repo)` so a future S3
driver can join DRIVERS and run the same contract.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitrflow.errors import ChecksumMismatchError, ObjectNotFoundError, RepositoryError
from pitrflow.storage.base import HashingReader, ObjectInfo, Repository
from pitrflow.storage.fs import STAGING, TMP_MARKER, FsRepository

DRIVERS = ["fs", "s3", "fs-encrypted", "s3-encrypted"]
PASSPHRASE_ENV = "PITR_TEST_STORAGE_PASSPHRASE"


@pytest.fixture(params=DRIVERS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    if request.param.endswith("-encrypted"):
        yield encrypted(request, tmp_path, request.param.removesuffix("-encrypted"))
        return
    yield plain(request, tmp_path, request.param)


def encrypted(request: pytest.FixtureRequest, tmp_path: Path, driver: str) -> Repository:
    from pitrflow.config import EncryptionConfig
    from pitrflow.storage.encrypted import EncryptedRepository
    from pitrflow.storage.masters import source_from_config

    if driver == "fs":
        request.getfixturevalue("monkeypatch").setenv(PASSPHRASE_ENV, "contract passphrase")
        config = EncryptionConfig(passphrase_env=PASSPHRASE_ENV)
    else:  # moto's KMS, on the same endpoint as its S3
        server = request.getfixturevalue("s3")
        kms_key = server.kms_key()
        config = EncryptionConfig(kms_key_id=kms_key, kms_region="us-east-1",
                                  kms_endpoint_url=server.url)
    return EncryptedRepository(plain(request, tmp_path, driver), source_from_config(config))


def plain(request: pytest.FixtureRequest, tmp_path: Path, driver: str) -> Repository:
    if driver == "fs":
        return FsRepository(tmp_path / "repo")
    if driver == "s3":
        # moto's S3 server over HTTP (tests/s3server.py), a fresh bucket per test, under a
        # prefix, with pages of 2 keys so every listing here is paginated.
        from pitrflow.config import RepositoryConfig
        from pitrflow.storage.s3 import S3Repository
        from pitrflow.storage.s3_client import settings_from_config

        server = request.getfixturevalue("s3")
        config = RepositoryConfig(url=f"s3://{server.new_bucket()}/repo",
                                  endpoint_url=server.url, region="us-east-1")
        return S3Repository(settings_from_config(config), list_page_size=2)
    raise AssertionError(f"no fixture for storage driver {driver!r}")


def fs_root(repo: Repository) -> Path | None:
    """The directory behind a filesystem repository (encrypted or not), None for others."""
    repo = getattr(repo, "inner", repo)
    return repo.root if isinstance(repo, FsRepository) else None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listed(repo: Repository, prefix: str = "") -> list[tuple[str, int]]:
    return [(info.key, info.size) for info in repo.list(prefix)]


def files_on_disk(root: Path) -> list[str]:
    """Files under the root, but the key store an encrypted repository keeps beside the data."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.relative_to(root).as_posix().startswith("_keys/"))


# --- put / get ---


def test_put_bytes_and_get_bytes(repo: Repository) -> None:
    data = b"hello\x00world" * 1000
    info = repo.put_bytes("main/backups/b1/base.tar", data)

    assert info == ObjectInfo("main/backups/b1/base.tar", len(data), sha(data))
    assert repo.get_bytes("main/backups/b1/base.tar") == data
    assert repo.exists("main/backups/b1/base.tar")
    assert not repo.exists("main/backups/b1")
    assert not repo.exists("main/backups/b1/base")


def test_put_bytes_replaces_an_object(repo: Repository) -> None:
    repo.put_bytes("k/obj", b"first version")
    info = repo.put_bytes("k/obj", b"second")
    assert info.size == 6
    assert repo.get_bytes("k/obj") == b"second"
    assert listed(repo) == [("k/obj", 6)]


def test_empty_object(repo: Repository) -> None:
    info = repo.put_bytes("k/empty", b"")
    assert info == ObjectInfo("k/empty", 0, sha(b""))
    assert repo.get_bytes("k/empty") == b""
    assert listed(repo) == [("k/empty", 0)]


def test_read_range_returns_exactly_the_asked_bytes(repo: Repository) -> None:
    data = bytes(range(256)) * 1000
    repo.put_bytes("a/ranged", data)
    assert repo.read_range("a/ranged", 0, 10) == data[:10]
    assert repo.read_range("a/ranged", 1234, 5000) == data[1234:6234]
    assert repo.read_range("a/ranged", len(data) - 3, 3) == data[-3:]
    assert repo.read_range("a/ranged", 7, 0) == b""


def test_read_range_across_chunk_boundaries(repo: Repository) -> None:
    # Several of the encrypted format's 64 KiB chunks, the last one partial.
    data = os.urandom(3 * 65536 + 1000)
    repo.put_bytes("a/big", data)
    for offset, length in ((0, len(data)), (65535, 2), (65536, 65536), (100, 150_000),
                           (3 * 65536, 1000), (len(data) - 1, 1), (70_000, 1)):
        assert repo.read_range("a/big", offset, length) == data[offset:offset + length]


def test_read_upto_stops_where_the_object_ends(repo: Repository) -> None:
    repo.put_bytes("a/ten", b"0123456789")
    assert repo.read_upto("a/ten", 5, 15) == b"56789"
    assert repo.read_upto("a/ten", 0, 10) == b"0123456789"
    assert repo.read_upto("a/ten", 10, 5) == b""
    assert repo.read_upto("a/ten", 3, 0) == b""


def test_read_range_past_the_end_names_the_object(repo: Repository) -> None:
    repo.put_bytes("a/short", b"0123456789")
    with pytest.raises(RepositoryError, match="a/short ends before byte 20"):
        repo.read_range("a/short", 5, 15)


def test_read_range_of_a_missing_object_names_it(repo: Repository) -> None:
    with pytest.raises(RepositoryError, match="no/such"):
        repo.read_range("no/such", 0, 4)


def test_missing_object_raises_naming_the_key(repo: Repository) -> None:
    with pytest.raises(ObjectNotFoundError) as caught:
        repo.get_bytes("main/backups/gone/manifest.json")
    assert "main/backups/gone/manifest.json" in caught.value.message
    assert isinstance(caught.value, RepositoryError)
    assert not repo.exists("main/backups/gone/manifest.json")


def test_put_file_move_moves_and_returns_sha_and_size(repo: Repository, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = repo.staging_dir() / "base.tar.zst"
    src.write_bytes(data)

    info = repo.put_file("main/backups/b1/base.tar.zst", src, move=True)

    assert info == ObjectInfo("main/backups/b1/base.tar.zst", len(data), sha(data))
    assert not src.exists()
    assert repo.get_bytes("main/backups/b1/base.tar.zst") == data
    assert listed(repo) == [("main/backups/b1/base.tar.zst", len(data))]


def test_put_file_move_from_outside_the_repository(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "outside" / "segment"
    src.parent.mkdir()
    src.write_bytes(b"wal bytes")
    info = repo.put_file("main/wal/x", src, move=True)
    assert (info.size, info.sha256) == (9, sha(b"wal bytes"))
    assert not src.exists()
    assert repo.get_bytes("main/wal/x") == b"wal bytes"


def test_put_file_move_across_file_systems(repo: Repository, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("/dev/shm is not available to put a source on another file system")
    root = fs_root(repo)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        if shm.stat().st_dev == root.stat().st_dev:
            pytest.skip("/dev/shm is on the same file system as the repository")
    src = shm / f"pitrflow-test-{os.getpid()}-{tmp_path.name}"
    data = os.urandom(100_000)
    src.write_bytes(data)
    try:
        info = repo.put_file("main/wal/cross", src, move=True)
        assert info == ObjectInfo("main/wal/cross", len(data), sha(data))
        assert not src.exists()
        assert repo.get_bytes("main/wal/cross") == data
    finally:
        src.unlink(missing_ok=True)


def test_put_file_copy_keeps_the_source(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"copy me")
    info = repo.put_file("main/copied", src)
    assert info == ObjectInfo("main/copied", 7, sha(b"copy me"))
    assert src.read_bytes() == b"copy me"
    assert repo.get_bytes("main/copied") == b"copy me"


# --- atomic writers ---


def test_writer_abort_leaves_nothing(repo: Repository) -> None:
    writer = repo.open_writer("main/backups/b1/base.tar")
    writer.write(b"partial data" * 100)
    writer.abort()

    assert not repo.exists("main/backups/b1/base.tar")
    assert listed(repo) == []
    assert listed(repo, "main/backups/b1/base.tar") == []
    root = fs_root(repo)
    if root is not None:
        assert files_on_disk(root) == []


def test_writer_commit_is_atomic(repo: Repository) -> None:
    key = "main/backups/b1/base.tar"
    repo.put_bytes(key, b"old")
    writer = repo.open_writer(key)
    writer.write(b"a" * 1000)

    # While the writer is open the old object is whole and the new one invisible.
    root = fs_root(repo)
    if root is not None:
        temps = [p.name for p in (root / "main/backups/b1").iterdir() if TMP_MARKER in p.name]
        assert len(temps) == 1
        assert temps[0].startswith("base.tar" + TMP_MARKER)
    assert listed(repo) == [(key, 3)]
    assert listed(repo, key) == [(key, 3)]
    assert repo.get_bytes(key) == b"old"

    writer.write(b"b" * 24)
    info = writer.commit()

    assert info == ObjectInfo(key, 1024, sha(b"a" * 1000 + b"b" * 24))
    assert repo.get_bytes(key) == b"a" * 1000 + b"b" * 24
    assert listed(repo) == [(key, 1024)]
    if root is not None:
        assert files_on_disk(root) == [key]


def test_new_object_is_invisible_until_commit(repo: Repository) -> None:
    key = "main/marks/m.json"
    writer = repo.open_writer(key)
    writer.write(b"{}")
    assert not repo.exists(key)
    assert listed(repo) == []
    assert listed(repo, "main/marks/m") == []
    root = fs_root(repo)
    if root is not None:
        assert len([p for p in root.rglob("*") if TMP_MARKER in p.name]) == 1
    assert writer.commit() == ObjectInfo(key, 2, sha(b"{}"))
    assert listed(repo) == [(key, 2)]


# --- listing ---

OBJECTS = {
    "main/wal/00000001/000000010000000000000002-aa.zst": b"2",
    "main/wal/00000001/000000010000000000000003-bb.zst": b"33",
    "main/wal/00000002/000000020000000000000003-cc.zst": b"444",
    "main/backups/b1/manifest.json": b"5555",
    "main/backups/b10/base.tar": b"66666",
    "mainx/other": b"7",
}


def fill(repo: Repository) -> Repository:
    for key, data in reversed(OBJECTS.items()):
        repo.put_bytes(key, data)
    return repo


def keys(repo: Repository, prefix: str) -> list[str]:
    return [info.key for info in repo.list(prefix)]


def test_list_everything_sorted_with_sizes(repo: Repository) -> None:
    filled = fill(repo)
    assert listed(filled) == sorted((k, len(v)) for k, v in OBJECTS.items())


def test_list_folder_prefix(repo: Repository) -> None:
    filled = fill(repo)
    assert keys(filled, "main/wal/00000001/") == [
        "main/wal/00000001/000000010000000000000002-aa.zst",
        "main/wal/00000001/000000010000000000000003-bb.zst",
    ]
    assert keys(filled, "main/backups/b1/") == ["main/backups/b1/manifest.json"]
    assert keys(filled, "main/") == sorted(k for k in OBJECTS if k.startswith("main/"))
    assert keys(filled, "nothing/") == []
    assert keys(filled, "main/wal/00000009/") == []


def test_list_partial_name_prefix(repo: Repository) -> None:
    filled = fill(repo)
    assert keys(filled, "main/wal/00000001/0000000100000000000000") == [
        "main/wal/00000001/000000010000000000000002-aa.zst",
        "main/wal/00000001/000000010000000000000003-bb.zst",
    ]
    assert keys(filled, "main/wal/00000001/000000010000000000000003") == [
        "main/wal/00000001/000000010000000000000003-bb.zst",
    ]
    assert keys(filled, "main/backups/b1") == [
        "main/backups/b1/manifest.json",
        "main/backups/b10/base.tar",
    ]
    assert keys(filled, "main") == sorted(OBJECTS)
    assert keys(filled, "main/wal/0000000") == sorted(k for k in OBJECTS if "/wal/" in k)


def test_list_prefix_naming_an_object(repo: Repository) -> None:
    filled = fill(repo)
    assert keys(filled, "main/backups/b1/manifest.json") == ["main/backups/b1/manifest.json"]
    assert keys(filled, "main/backups/b1/manifest.json/") == []


def test_list_of_an_empty_repository(repo: Repository) -> None:
    assert listed(repo) == []
    assert listed(repo, "main/") == []


# --- delete ---


def test_delete_removes_the_object_and_empty_parents(repo: Repository) -> None:
    repo.put_bytes("main/backups/b1/x", b"x")
    repo.put_bytes("main/backups/b2/y", b"y")
    root = fs_root(repo)

    repo.delete("main/backups/b1/x")
    assert not repo.exists("main/backups/b1/x")
    assert keys(repo, "") == ["main/backups/b2/y"]
    if root is not None:
        assert not (root / "main/backups/b1").exists()
        assert (root / "main/backups/b2").is_dir()

    repo.delete("main/backups/b2/y")
    assert keys(repo, "") == []
    if root is not None:
        assert not (root / "main").exists()
        assert root.is_dir(), "the repository root itself stays"


def test_delete_of_a_missing_object_is_quiet(repo: Repository) -> None:
    repo.put_bytes("main/keep", b"k")
    repo.delete("main/never-written")
    repo.delete("other/never/written")
    assert keys(repo, "") == ["main/keep"]


# --- staging ---


def test_staging_dirs_are_never_listed(repo: Repository) -> None:
    repo.put_bytes("main/backups/b1/manifest.json", b"{}")
    staging = repo.staging_dir()
    (staging / "base.tar").write_bytes(b"half a backup")
    (staging / "pg_wal").mkdir()
    (staging / "pg_wal" / "000000010000000000000002").write_bytes(b"w")
    other = repo.staging_dir()
    assert other != staging
    (other / "f").write_bytes(b"f")

    assert keys(repo, "") == ["main/backups/b1/manifest.json"]
    assert keys(repo, ".st") == []
    assert keys(repo, "main/") == ["main/backups/b1/manifest.json"]
    root = fs_root(repo)
    if root is not None and repo.features.local_staging:
        assert staging.parent == root / STAGING
        assert staging.stat().st_dev == root.stat().st_dev

    repo.discard_staging(staging)
    assert not staging.exists()
    assert (other / "f").exists()


# --- key validation ---


@pytest.mark.parametrize("key", ["../escape", "main/../../escape", "main/..", "/etc/passwd",
                                 "a/../b"])
def test_keys_escaping_the_repository_are_rejected(
    repo: Repository, key: str, tmp_path: Path
) -> None:
    with pytest.raises(RepositoryError, match="invalid object key"):
        repo.put_bytes(key, b"x")
    with pytest.raises(RepositoryError, match="invalid object key"):
        repo.get_bytes(key)
    with pytest.raises(RepositoryError, match="invalid object key"):
        repo.exists(key)
    with pytest.raises(RepositoryError, match="invalid object key"):
        repo.delete(key)
    with pytest.raises(RepositoryError, match="invalid object key"):
        repo.open_writer(key)
    assert not (tmp_path / "escape").exists()
    assert listed(repo) == []


def test_list_prefix_escaping_the_repository_is_rejected(repo: Repository) -> None:
    with pytest.raises(RepositoryError, match="invalid object key"):
        list(repo.list("../"))


# --- check_writable ---


def test_check_writable_on_a_writable_repository_leaves_nothing(repo: Repository) -> None:
    repo.check_writable()
    assert listed(repo) == []
    root = fs_root(repo)
    if root is not None:
        assert root.is_dir()
        assert files_on_disk(root) == []


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[None]:
    """Make `path` refuse new entries: chmod for a normal user, chattr +i for root."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root, which ignores directory permissions, and chattr is "
                    "not installed to make the directory immutable instead")
    done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip("running as root, which ignores directory permissions, and chattr +i "
                    f"failed here (no CAP_LINUX_IMMUTABLE or unsupported file system): "
                    f"{done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_check_writable_on_a_read_only_directory(repo: Repository) -> None:
    root = fs_root(repo)
    if root is None:
        pytest.skip("read-only directories are a filesystem-driver matter")
    root.mkdir(parents=True)
    with read_only_dir(root):
        with pytest.raises(RepositoryError) as caught:
            repo.check_writable()
        assert caught.value.message.startswith(f"repository {root} is not writable: ")
        assert list(root.iterdir()) == []


def test_check_writable_when_the_root_cannot_be_created(repo: Repository) -> None:
    root = fs_root(repo)
    if root is None:
        pytest.skip("directory creation is a filesystem-driver matter")
    root.parent.mkdir(parents=True, exist_ok=True)
    with read_only_dir(root.parent):
        with pytest.raises(RepositoryError) as caught:
            repo.check_writable()
        assert caught.value.message.startswith(f"cannot create repository directory {root}: ")
    assert not root.exists()


# --- HashingReader ---


def read_through(repo: Repository, key: str, chunk: int) -> HashingReader:
    raw = repo.open_reader(key)
    reader = HashingReader(raw, key)
    try:
        while reader.read(chunk):
            pass
    finally:
        reader.close()
    return reader


def test_hashing_reader_counts_and_hashes(repo: Repository) -> None:
    data = os.urandom(70_001)
    repo.put_bytes("main/obj", data)
    reader = read_through(repo, "main/obj", 4096)
    assert reader.size == len(data)
    assert reader.digest.hexdigest() == sha(data)
    reader.verify(sha(data), len(data))
    reader.verify(sha(data))
    reader.verify(None, len(data))


def test_hashing_reader_readinto(repo: Repository) -> None:
    repo.put_bytes("main/obj", b"0123456789")
    reader = HashingReader(repo.open_reader("main/obj"), "main/obj")
    try:
        buffer = bytearray(4)
        got = []
        while n := reader.readinto(buffer):
            got.append(bytes(buffer[:n]))
    finally:
        reader.close()
    assert got == [b"0123", b"4567", b"89"]
    reader.verify(sha(b"0123456789"), 10)


def test_hashing_reader_wrong_sha_names_the_key(repo: Repository) -> None:
    repo.put_bytes("main/wal/seg", b"segment")
    reader = read_through(repo, "main/wal/seg", 3)
    with pytest.raises(ChecksumMismatchError) as caught:
        reader.verify(sha(b"something else"), 7)
    assert caught.value.message == "object main/wal/seg does not match its recorded sha256"
    assert isinstance(caught.value, RepositoryError)


def test_hashing_reader_wrong_size_names_the_key(repo: Repository) -> None:
    repo.put_bytes("main/wal/seg", b"segment")
    reader = read_through(repo, "main/wal/seg", 1 << 20)
    with pytest.raises(ChecksumMismatchError) as caught:
        reader.verify(sha(b"segment"), 8)
    assert caught.value.message == "object main/wal/seg has 7 bytes, its manifest says 8"


def test_hashing_reader_detects_a_damaged_object(repo: Repository) -> None:
    repo.put_bytes("main/obj", b"original")
    root = fs_root(repo)
    if root is None:
        pytest.skip("damaging an object in place needs direct access to the store")
    stored = bytearray((root / "main/obj").read_bytes())
    stored[len(stored) - 5] ^= 0x20  # a letter's case (encrypted: a byte of the tag)
    (root / "main/obj").write_bytes(bytes(stored))
    with pytest.raises(ChecksumMismatchError, match="main/obj"):
        reader = read_through(repo, "main/obj", 1024)
        reader.verify(sha(b"original"), 8)
