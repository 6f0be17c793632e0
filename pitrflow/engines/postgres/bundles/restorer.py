"""Write a v2 backup's files into a data directory on `process_max` threads.

The directories, empty files and symlinks are made first (owned by the
instance's user as they are made), then worker threads carry out the fetch
plan: each read is fetched (ranged), checked (SHA-256 of the object or of
each frame), decompressed frame by frame and written with pwrite at the
file's offset, so a large file is written by several threads at once.
The control file comes last, after one sync of the file system: a
directory left half-written by a failure can never be started.  Recorded
modes and mtimes are set at the end (a delta restore trusts them later).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pitrflow.engines.postgres.bundles.fetchplan import (
    PG_CONTROL,
    FetchPlan,
    Read,
    Wanted,
    plan_fetch,
)
from pitrflow.engines.postgres.bundles.fsutil import (
    WRITEBACK_BYTES,
    Owner,
    fsync_path,
    start_writeback,
    syncfs,
)
from pitrflow.engines.postgres.bundles.index import FileIndex, Frame, IndexEntry
from pitrflow.errors import ChecksumMismatchError
from pitrflow.progress import Progress
from pitrflow.storage.base import Repository

log = logging.getLogger("pitrflow.restore")

DAMAGED_HINT = "the repository copy is damaged: restore from another backup and run pitr verify"


@dataclass(frozen=True)
class RestoredFiles:
    files_written: int
    bytes_written: int
    reads: int


def _damaged(key: str, frame: Frame | None, entry: IndexEntry | None, what: str
             ) -> ChecksumMismatchError:
    where = f" frame at byte {frame.offset}" if frame is not None else ""
    whose = f" (file {entry.path})" if entry is not None else ""
    return ChecksumMismatchError(f"object {key}{where}{whose} {what}", DAMAGED_HINT)


class _Worker:
    """Carries out reads; one zstd decompressor per thread."""

    def __init__(self, repo: Repository, prefix: str, dest: Path, index: FileIndex,
                 owner: Owner | None, progress: Progress | None) -> None:
        self._repo = repo
        self._prefix = prefix
        self._dest = str(dest)
        self._index = index
        self._owner = owner
        self._progress = progress
        self._local = threading.local()
        self.stop = threading.Event()

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        found = getattr(self._local, "zstd", None)
        if found is None:
            found = self._local.zstd = zstandard.ZstdDecompressor()
        return found

    def _open(self, path: str) -> int:
        """Open a file to write; whoever creates it (threads share large files) sets its owner."""
        full = os.path.join(self._dest, path)
        try:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return os.open(full, os.O_WRONLY)
        if self._owner is not None:
            os.fchown(fd, self._owner.uid, self._owner.gid)
        return fd

    def run(self, read: Read, paths: dict[str, str] | None = None) -> int:
        """Fetch, check and write one read; `paths` writes some files under other names."""
        if self.stop.is_set():
            return 0
        key = self._prefix + read.object
        data = memoryview(self._repo.read_range(key, read.offset, read.length))
        if read.whole:
            record = self._index.object(read.object)
            assert record is not None
            if hashlib.sha256(data).hexdigest() != record.sha256:
                raise self._locate(key, read, data)
        fds: dict[str, int] = {}
        written = 0
        try:
            for entry, frame in read.frames:
                stored = data[frame.offset - read.offset:frame.offset - read.offset + frame.length]
                if not read.whole and hashlib.sha256(stored).hexdigest() != frame.sha256:
                    raise _damaged(key, frame, entry, "does not match its recorded sha256")
                try:
                    raw = self._decompressor().decompress(stored)
                except zstandard.ZstdError as exc:
                    raise _damaged(key, frame, entry, f"does not decompress: {exc}") from None
                if len(raw) != frame.raw_length:
                    raise _damaged(key, frame, entry, f"holds {len(raw)} bytes, its index says "
                                                      f"{frame.raw_length}")
                start, end, file_offset = entry.data_range(frame)
                fd = fds.get(entry.path)
                if fd is None and (end > start or entry.size == 0):
                    fd = fds[entry.path] = self._open((paths or {}).get(entry.path, entry.path))
                if end > start:
                    assert fd is not None
                    _pwrite_all(fd, memoryview(raw)[start:end], file_offset)
                    written += end - start
                    if end - start >= WRITEBACK_BYTES:
                        start_writeback(fd, file_offset, end - start)
                    if self._progress is not None:
                        self._progress.advance(end - start)
                if fd is not None and len(entry.frames) == 1:
                    # A file in one frame is complete: its attributes can be set right here.
                    os.fchmod(fd, entry.mode)
                    os.utime(fd, (entry.mtime, entry.mtime))
        finally:
            for fd in fds.values():
                os.close(fd)
        return written

    def _locate(self, key: str, read: Read, data: memoryview) -> ChecksumMismatchError:
        """The whole object failed its SHA-256: name the frame (and file) that differs."""
        for entry, frame in read.frames:
            stored = data[frame.offset:frame.offset + frame.length]
            if hashlib.sha256(stored).hexdigest() != frame.sha256:
                return _damaged(key, frame, entry, "does not match its recorded sha256")
        return _damaged(key, None, None, "does not match its recorded sha256")


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _make_tree(index: FileIndex, dest: Path, owner: Owner | None, wanted: Wanted | None
               ) -> None:
    """Directories and symlinks; files to rewrite whole are emptied (workers create the rest)."""
    root = str(dest)
    made: set[str] = {""}
    for entry in index.entries:
        parent = entry.path if entry.type == "dir" else entry.path.rpartition("/")[0]
        if parent not in made:
            _make_dirs(root, parent, owner, made)
        path = os.path.join(root, entry.path)
        if entry.type == "symlink":
            if os.path.islink(path) and os.readlink(path) == entry.link:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.symlink(entry.link, path)
            if owner is not None:
                os.lchown(path, owner.uid, owner.gid)
        elif entry.type == "file" and wanted is not None and entry.path in wanted \
                and wanted[entry.path] is None:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(path, 0)


def _make_dirs(root: str, rel: str, owner: Owner | None, made: set[str]) -> None:
    """`rel` and its missing parents, owned by `owner` (the archive may list a parent late)."""
    done = ""
    for part in rel.split("/"):
        done = f"{done}/{part}" if done else part
        if done in made:
            continue
        path = os.path.join(root, done)
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
            if owner is not None:
                os.chown(path, owner.uid, owner.gid)
        made.add(done)


def _run_reads(worker: _Worker, reads: tuple[Read, ...], threads: int) -> None:
    if not reads:
        return
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pitr-restore") as pool:
        futures = [pool.submit(worker.run, read) for read in reads]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            worker.stop.set()  # reads not started yet return at once
            for future in futures:
                future.cancel()
            raise failed.exception()  # type: ignore[misc]


def _write_control_file(worker: _Worker, plan: FetchPlan, index: FileIndex, dest: Path,
                        owner: Owner | None) -> None:
    entry = index.entry(PG_CONTROL)
    if entry is None:
        return
    # Written under a temporary name, then renamed: it appears whole or not at all.
    staged = PG_CONTROL + ".pitrflow-tmp"
    path, tmp = dest / PG_CONTROL, dest / staged
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by an interrupted run
    for read in plan.last:
        worker.run(read, {PG_CONTROL: staged})
    os.chmod(tmp, entry.mode)
    os.utime(tmp, (entry.mtime, entry.mtime))
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent, directory=True)


def _set_attributes(index: FileIndex, dest: Path, wanted: Wanted | None) -> None:
    """Recorded sizes, modes and mtimes of what the workers could not finish (files in
    several frames, files a delta kept or patched), then directories, deepest first
    (writing inside a directory changes its mtime)."""
    root = str(dest)
    for entry in index.entries:
        if entry.type == "file" and entry.path != PG_CONTROL and (
                len(entry.frames) > 1 or (wanted is not None and entry.path not in wanted)):
            path = os.path.join(root, entry.path)
            if wanted is not None and entry.path in wanted and wanted[entry.path] is not None:
                os.truncate(path, entry.size)  # patched in place: it may have shrunk
            os.chmod(path, entry.mode)
            os.utime(path, (entry.mtime, entry.mtime))
    for entry in sorted((e for e in index.entries if e.type == "dir"),
                        key=lambda e: e.path.count("/"), reverse=True):
        path = os.path.join(root, entry.path)
        os.chmod(path, entry.mode)
        os.utime(path, (entry.mtime, entry.mtime))


def restore_files(repo: Repository, prefix: str, index: FileIndex, dest: Path, *,
                  user: str | None, threads: int, wanted: Wanted | None = None,
                  progress_what: str = "restore") -> RestoredFiles:
    """Write every file of `index` (or only `wanted` files or frames, plus the control
    file) to `dest`, which must exist.  Files outside `wanted` are left as they are, and
    files with only some frames wanted are patched in place (a delta restore)."""
    owner = Owner.of(user)
    plan = plan_fetch(index, None if wanted is None else {**wanted, PG_CONTROL: None})
    # An existing control file goes first: until the last step, this is no data directory.
    with contextlib.suppress(FileNotFoundError):
        (dest / PG_CONTROL).unlink()
    _make_tree(index, dest, owner, wanted)
    progress = Progress(progress_what, plan.data_bytes)
    worker = _Worker(repo, prefix, dest, index, owner, progress)
    _run_reads(worker, plan.reads, threads)
    _set_attributes(index, dest, wanted)
    syncfs(dest)
    _write_control_file(worker, plan, index, dest, owner)
    progress.finish()
    files = sum(1 for e in index.entries if e.type == "file"
                and (wanted is None or e.path in wanted or e.path == PG_CONTROL))
    return RestoredFiles(files, plan.data_bytes, len(plan.reads) + len(plan.last))


def remove_tree_entry(path: Path) -> None:
    """Remove a file, symlink or whole directory (never following a symlink)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
