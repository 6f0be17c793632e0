"""Reading the compressed archives pg_basebackup is still writing into a staging directory.

pg_basebackup writes one archive at a time and closes each before it opens
the next, so an archive in the directory that pg_basebackup no longer holds
open (its /proc/<pid>/fd says so) while it has moved on to a next file is
complete, and the one it holds open is read as it grows: a read at its
current end waits for more, and ends only once the file is complete or
pg_basebackup has exited successfully.  Closed alone is not enough: a dying
pg_basebackup closes (and may remove) its files before its exit status can
be read, and that is its failure, never a short archive.  Bytes read
are handed back to the file system as we go (FALLOC_FL_PUNCH_HOLE), so the
staging directory holds about what the reader lags behind the writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import os
import re
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import zstandard

from pitrflow.errors import CommandFailedError

ARCHIVE = re.compile(r"^(base|\d+)\.tar(\.gz|\.zst)?$")
POLL_SECONDS = 0.05
PUNCH_BYTES = 8 * 1024 * 1024  # release consumed bytes in steps of this size
READ_BYTES = 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free these bytes of the file's storage, keeping its size; False where unsupported."""
    fallocate = getattr(_LIBC, "fallocate", None)
    if fallocate is None:
        return False
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    return fallocate(fd, ctypes.c_int(mode), ctypes.c_longlong(offset),
                     ctypes.c_longlong(length)) == 0


def open_files(pid: int, directory: Path) -> set[str]:
    """Names of the files in `directory` that process `pid` holds open."""
    names: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = Path(os.readlink(fd_dir / fd))
                # An open file since removed reads "<name> (deleted)": no longer in here.
                if target.parent == directory and not target.name.endswith(" (deleted)"):
                    names.add(target.name)
    return names


def present_files(directory: Path) -> set[str]:
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return set()  # not created yet, or removed by a failed pg_basebackup


class Writer:
    """The pg_basebackup process writing into `directory`, as the readers see it."""

    def __init__(self, proc: subprocess.Popen[bytes], directory: Path, deadline: float,
                 failure: Callable[[int], CommandFailedError]) -> None:
        self.proc = proc
        self.directory = directory
        self.deadline = deadline
        self._failure = failure

    def exited(self) -> bool:
        """True once pg_basebackup has exited successfully; raises its failure otherwise."""
        code = self.proc.poll()
        if code is None:
            if time.monotonic() > self.deadline:
                raise CommandFailedError("pg_basebackup did not finish within "
                                         "backup_timeout_seconds",
                                         "raise backup_timeout_seconds, or set max_rate lower")
            return False
        if code != 0:
            raise self._failure(code)
        return True

    def holds_open(self, name: str) -> bool:
        return name in open_files(self.proc.pid, self.directory)

    def moved_on_from(self, name: str, known: set[str]) -> bool:
        """True once `name` is closed and pg_basebackup holds another file here, or one
        not in `known` has appeared: it closed `name` to go on, not because it is dying."""
        held = open_files(self.proc.pid, self.directory)
        if name in held:
            return False
        return bool(held) or bool(present_files(self.directory) - known)


class GrowingFile(io.RawIOBase):
    """A file another process may still be appending to; EOF only once it is complete."""

    def __init__(self, path: Path, writer: Writer) -> None:
        self._path = path
        self._writer = writer
        self._fd = os.open(path, os.O_RDWR)  # read-write: punching holes needs a writable fd
        self._known = present_files(path.parent)
        self._position = 0
        self._released = 0
        self._can_punch = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            got = os.preadv(self._fd, [buffer], self._position)
            if got:
                self._position += got
                self._release()
                return got
            if self._complete():
                # One more read: the last bytes may have landed just before it closed.
                got = os.preadv(self._fd, [buffer], self._position)
                self._position += got
                return got
            time.sleep(POLL_SECONDS)

    def _complete(self) -> bool:
        if self._writer.exited():
            return True
        # Else wait: a writer that is dying says so through exited() on a later call.
        return self._writer.moved_on_from(self._path.name, self._known)

    def _release(self) -> None:
        if not self._can_punch or self._position - self._released < PUNCH_BYTES:
            return
        end = self._position - self._position % PUNCH_BYTES
        self._can_punch = _punch_hole(self._fd, self._released, end - self._released)
        self._released = end

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class _Gunzip(io.RawIOBase):
    """One gzip member, decompressed as it is read (zlib releases the GIL while inflating)."""

    def __init__(self, raw: BinaryIO, where: str) -> None:
        self._raw = raw
        self._where = where
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            if self._inflate.eof:
                if self._inflate.unused_data or self._raw.read(1):
                    raise CommandFailedError(f"{self._where}: bytes after the gzip stream",
                                             "pg_basebackup wrote an archive pitrflow cannot "
                                             "read; take the backup again")
                return 0
            # At most READ_BYTES out per call (a run of zero pages inflates a thousandfold):
            # what zlib could not take yet is fed again first.
            data = self._inflate.unconsumed_tail or self._raw.read(READ_BYTES)
            if not data:
                raise CommandFailedError(f"{self._where}: the gzip stream ends early",
                                         "pg_basebackup stopped early; see its log lines")
            try:
                self._pending = self._inflate.decompress(data, READ_BYTES)
            except zlib.error as exc:
                raise CommandFailedError(f"{self._where}: {exc}", "take the backup again"
                                         ) from None
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def decompressed(raw: BinaryIO, name: str, where: str) -> BinaryIO:
    """The tar bytes of archive `name` (by its extension), buffered for small reads."""
    if name.endswith(".zst"):
        stream: io.RawIOBase = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=READ_BYTES, read_across_frames=True, closefd=False)
    elif name.endswith(".gz"):
        stream = _Gunzip(raw, where)
    else:
        stream = raw  # type: ignore[assignment]
    return io.BufferedReader(stream, buffer_size=READ_BYTES)  # type: ignore[arg-type]
