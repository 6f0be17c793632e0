"""Filesystem repository driver.

Atomicity comes from writing to a temporary name in the destination
directory, fsyncing, then rename(2), which is atomic on POSIX file systems;
the directory is fsynced too so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pitrflow.errors import ObjectNotFoundError, RepositoryError
from pitrflow.storage.base import (
    CHUNK,
    ObjectInfo,
    StorageFeatures,
    TransferSettings,
    sha256_file,
    whole_range,
)

TMP_MARKER = ".tmp-"
STAGING = ".staging"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FsWriter:
    def __init__(self, repo: FsRepository, key: str) -> None:
        self._final = repo.path_of(key)
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._final.with_name(f"{self._final.name}{TMP_MARKER}{uuid.uuid4().hex}")
        self._handle = open(self._tmp, "xb")  # noqa: SIM115 - closed in commit/abort
        self._digest = hashlib.sha256()
        self._size = 0
        self._key = key

    def write(self, data: bytes) -> int:
        self._handle.write(data)
        self._digest.update(data)
        self._size += len(data)
        return len(data)

    def commit(self) -> ObjectInfo:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self._final)
        _fsync_dir(self._final.parent)
        return ObjectInfo(self._key, self._size, self._digest.hexdigest())

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> _FsWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


class FsRepository:
    features = StorageFeatures(local_staging=True, local_paths=True)

    def __init__(self, root: Path, transfer: TransferSettings | None = None) -> None:
        self.root = Path(root)
        self.transfer = transfer or TransferSettings()

    def describe(self) -> str:
        return str(self.root)

    def path_of(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise RepositoryError(f"invalid object key {key!r}", "keys are relative paths")
        return self.root / key

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RepositoryError(
                f"cannot create repository directory {self.root}: {exc.strerror}",
                "check repository.path and its permissions",
            ) from None

    def open_writer(self, key: str) -> _FsWriter:
        self._ensure_root()
        return _FsWriter(self, key)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        with self.open_writer(key) as writer:
            writer.write(data)
            return writer.commit()

    def put_file(self, key: str, src: Path, move: bool = False) -> ObjectInfo:
        final = self.path_of(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if move:
            sha, size = sha256_file(src)
            with open(src, "rb") as handle:
                os.fsync(handle.fileno())
            try:
                os.replace(src, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            else:
                _fsync_dir(final.parent)
                return ObjectInfo(key, size, sha)
        with open(src, "rb") as handle, self.open_writer(key) as writer:
            while chunk := handle.read(CHUNK):
                writer.write(chunk)
            info = writer.commit()
        if move:
            src.unlink()
        return info

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self.path_of(key), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise ObjectNotFoundError(
                f"object {key} is missing from repository {self.root}",
                "the repository was changed outside pitrflow; run pitr verify",
            ) from None

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as handle:
            return handle.read()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return whole_range(key, offset, length, self.read_upto(key, offset, length))

    def read_upto(self, key: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self.path_of(key), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFoundError(
                f"object {key} is missing from repository {self.root}",
                "the repository was changed outside pitrflow; run pitr verify",
            ) from None
        try:
            data = os.pread(fd, length, offset)
            while len(data) < length:  # pread may return less on some file systems
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
        return data

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix` (a folder or any leading string), sorted."""
        directory, _, _ = prefix.rpartition("/")
        base = self.path_of(directory) if directory else self.root
        if not base.is_dir():
            return
        entries: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != STAGING]
            for filename in filenames:
                if TMP_MARKER in filename:
                    continue
                full = Path(dirpath) / filename
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = full.stat()
                except FileNotFoundError:
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                entries.append(ObjectInfo(key, stat.st_size, modified=modified))
        entries.sort(key=lambda info: info.key)
        yield from entries

    def delete(self, key: str) -> None:
        path = self.path_of(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Drop now-empty directories so listings stay small.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def staging_dir(self) -> Path:
        """A fresh directory on the repository's file system, for rename-in."""
        self._ensure_root()
        path = self.root / STAGING / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def discard_staging(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def check_writable(self) -> None:
        self._ensure_root()
        probe = f".probe-{uuid.uuid4().hex}"
        try:
            self.put_bytes(probe, b"ok")
        except OSError as exc:
            raise RepositoryError(
                f"repository {self.root} is not writable: {exc.strerror}",
                "check repository.path and its permissions",
            ) from None
        self.delete(probe)
