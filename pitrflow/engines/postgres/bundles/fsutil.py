"""File-system steps a restore needs: ownership, one sync of the whole target, CRC32C of files."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

import crc32c

log = logging.getLogger("pitrflow.restore")

READ_CHUNK = 4 * 1024 * 1024
# Writes at least this large start their writeback at once (see start_writeback).
WRITEBACK_BYTES = 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    @classmethod
    def of(cls, user: str | None) -> Owner | None:
        """The owner restored files must have (None: whoever we are)."""
        if user is None:
            return None
        entry = pwd.getpwnam(user)
        return cls(entry.pw_uid, entry.pw_gid)


def syncfs(path: Path) -> None:
    """Flush the file system holding `path` once (syncfs(2)), instead of fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if getattr(_LIBC, "syncfs", None) is not None and _LIBC.syncfs(fd) == 0:
            return
        log.debug("syncfs failed (errno %d); falling back to sync", ctypes.get_errno())
        os.sync()
    finally:
        os.close(fd)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting for it.

    A restore writes far less than the page cache holds, so otherwise nothing
    reaches the disk until the final sync, which then waits for all of it;
    started early, the disk works while the threads decompress.
    """
    sync_file_range = getattr(_LIBC, "sync_file_range", None)
    if sync_file_range is not None:
        sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(length),
                        ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_crc32c(path: Path) -> str:
    """CRC32C of a file in backup_manifest's form (the value's little-endian bytes, in hex)."""
    value = 0
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(view):
            value = crc32c.crc32c(view[:got], value)
    return value.to_bytes(4, "little").hex()
