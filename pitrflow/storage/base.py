"""The repository interface every storage driver implements.

A handful of required operations; differences between drivers are declared
as feature flags rather than discovered by type checks.  Every write is
atomic: an object is either absent or complete, and its SHA-256 is returned
so the caller can record it in a manifest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from pitrflow.errors import ChecksumMismatchError, RepositoryError

CHUNK = 4 * 1024 * 1024


MIB = 1024 * 1024


def default_process_max() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class TransferSettings:
    """How backups are cut into objects and how many threads move them ([repository]).

    `process_max` threads compress a backup and fetch, check and write a restore;
    small files are packed into bundles of about `bundle_size` raw bytes, and
    large files cut into frames of `frame_size` raw bytes.
    """

    process_max: int = default_process_max()
    bundle_size: int = 32 * MIB
    frame_size: int = 4 * MIB


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None = None
    # When the object was last written, where a listing tells (orphan cleanup ages by it).
    modified: datetime | None = None


@dataclass(frozen=True)
class StorageFeatures:
    # A local directory on the repository's own file system, so a producer
    # (pg_basebackup) can write there and the driver can move files in by rename.
    local_staging: bool
    # Objects can be read by path without a download (lets restores read in place).
    local_paths: bool
    # Interrupted uploads linger invisibly until aborted (see storage.uploads).
    multipart_uploads: bool = False
    # Objects are locked for a while after they are written (see storage.locking).
    object_lock: bool = False
    # Objects are encrypted by the repository (storage.encrypted; see storage.keys).
    encrypted: bool = False


class AtomicWriter(Protocol):
    """A new object being written; invisible until commit()."""

    def write(self, data: bytes) -> int: ...

    def commit(self) -> ObjectInfo: ...

    def abort(self) -> None: ...


@runtime_checkable
class Repository(Protocol):
    features: StorageFeatures
    transfer: TransferSettings

    def describe(self) -> str: ...

    def open_writer(self, key: str) -> AtomicWriter: ...

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo: ...

    def put_file(self, key: str, src: Path, move: bool = False) -> ObjectInfo: ...

    def open_reader(self, key: str) -> BinaryIO: ...

    def get_bytes(self, key: str) -> bytes: ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Exactly `length` bytes of the object from `offset` (parallel, ranged restores)."""
        ...

    def read_upto(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`: fewer only where the object ends first."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def staging_dir(self) -> Path: ...

    def discard_staging(self, path: Path) -> None: ...

    def check_writable(self) -> None: ...


class HashingReader:
    """Wraps a stream, hashing and counting what passes through.

    verify() after the last read raises if the object is not what the
    manifest recorded, naming the object.
    """

    def __init__(self, raw: BinaryIO, key: str) -> None:
        self._raw = raw
        self.key = key
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    def verify(self, sha256: str | None, size: int | None = None) -> None:
        if size is not None and self.size != size:
            raise ChecksumMismatchError(
                f"object {self.key} has {self.size} bytes, its manifest says {size}",
                "the repository copy is damaged: restore from another backup and run pitr verify",
            )
        if sha256 is not None and self.digest.hexdigest() != sha256:
            raise ChecksumMismatchError(
                f"object {self.key} does not match its recorded sha256",
                "the repository copy is damaged: restore from another backup and run pitr verify",
            )


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def whole_range(key: str, offset: int, length: int, data: bytes) -> bytes:
    """`data`, read from [offset, offset + length) of `key`, if it is all there; a
    repository error naming the object otherwise (every driver's read_range)."""
    if len(data) != length:
        raise RepositoryError(
            f"object {key} ends before byte {offset + length} (read {len(data)} of "
            f"{length} bytes from {offset})",
            "the repository copy is truncated: run pitr verify")
    return data
