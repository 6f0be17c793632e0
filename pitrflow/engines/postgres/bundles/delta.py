"""Delta restore: reuse the files already in a data directory, fetch only the others.

plan_delta is pure: from the backup's file index and a listing of the
directory it sorts every path into
- keep: same size and mtime, the mtime older than the backup's start, and
  the caller chose to trust that (the fast mode);
- check: kept only if its CRC32C matches the index (check_files): a file in
  one frame as a whole; a larger file frame by frame, so that only the
  frames that differ are fetched into it (`patch`), even when it grew or
  shrank (a table's last segment);
- write: missing, of another type, or a one-frame file of another size:
  fetched whole;
- remove: not in the backup at all (pg_wal's old segments, a dropped
  table's files, strays), or in the way of what the backup holds there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from pitrflow.engines.postgres.bundles.fsutil import file_crc32c
from pitrflow.engines.postgres.bundles.index import FileIndex, IndexEntry


@dataclass(frozen=True)
class LocalFile:
    path: str
    type: str  # "file" | "dir" | "symlink" | "other"
    size: int
    mtime: int  # whole seconds
    link: str = ""


@dataclass
class DeltaPlan:
    keep: list[str] = field(default_factory=list)
    check: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    patch: dict[str, list[int]] = field(default_factory=dict)  # path -> frames to fetch
    remove: list[str] = field(default_factory=list)  # top-most paths only

    def wanted(self) -> dict[str, list[int] | None]:
        """What the restorer fetches: whole files, and frames of patched ones."""
        return {**dict.fromkeys(self.write), **self.patch}

    def write_bytes(self, index: FileIndex) -> int:
        total = 0
        for path, frames in self.wanted().items():
            entry = index.entry(path)
            if entry is None:
                continue
            for n, frame in enumerate(entry.frames):
                if frames is None or n in frames:
                    start, end, _ = entry.data_range(frame)
                    total += end - start
        return total


def scan_data_dir(root: Path, skip: Iterable[str] = ()) -> dict[str, LocalFile]:
    """Every path under `root`, relative, never following symlinks."""
    skipped = set(skip)
    found: dict[str, LocalFile] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames + filenames:
            full = base / name
            rel = full.relative_to(root).as_posix()
            if rel in skipped:
                continue
            st = full.lstat()
            if full.is_symlink():
                found[rel] = LocalFile(rel, "symlink", 0, int(st.st_mtime), os.readlink(full))
            elif full.is_dir():
                found[rel] = LocalFile(rel, "dir", 0, int(st.st_mtime))
            elif full.is_file():
                found[rel] = LocalFile(rel, "file", st.st_size, int(st.st_mtime))
            else:
                found[rel] = LocalFile(rel, "other", 0, int(st.st_mtime))
        # Symlinked directories are listed above, never entered.
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()
                       and (base / d).relative_to(root).as_posix() not in skipped]
    return found


def _fits(entry: IndexEntry, local: LocalFile) -> bool:
    if entry.type != local.type:
        return False
    return entry.type != "symlink" or entry.link == local.link


def plan_delta(index: FileIndex, local: dict[str, LocalFile], backup_start: float,
               trust_mtime: bool) -> DeltaPlan:
    plan = DeltaPlan()
    doomed: list[str] = []
    for path, here in local.items():
        entry = index.entry(path)
        if entry is None or not _fits(entry, here):
            doomed.append(path)
    # Remove top-most paths only: a directory takes what is under it along.
    removed: set[str] = set()
    for path in sorted(doomed):
        if not _under(path, removed):
            removed.add(path)
            plan.remove.append(path)
    for entry in index.entries:
        if entry.type != "file":
            continue
        here = local.get(entry.path)
        if here is None or entry.path in removed or _under(entry.path, removed) or (
                here.size != entry.size and len(entry.frames) <= 1):
            plan.write.append(entry.path)
        elif trust_mtime and here.size == entry.size and here.mtime == entry.mtime and \
                entry.mtime + 1 < backup_start:
            plan.keep.append(entry.path)
        else:
            plan.check.append(entry.path)
    return plan


def _under(path: str, removed: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in removed for i in range(1, len(parts)))


def _frames_differing(entry: IndexEntry, path: Path) -> list[int]:
    """Positions of the frames whose file data differs from (or is missing in) `path`."""
    differing = []
    with open(path, "rb", buffering=0) as handle:
        for n, frame in enumerate(entry.frames):
            start, end, offset = entry.data_range(frame)
            data = os.pread(handle.fileno(), end - start, offset)
            if len(data) != end - start or (
                    crc32c.crc32c(data).to_bytes(4, "little").hex() != frame.crc32c):
                differing.append(n)
    return differing


def check_files(plan: DeltaPlan, index: FileIndex, root: Path, threads: int) -> None:
    """Sort every `check` file into keep, write (whole) or patch (some frames), in place."""
    paths = list(plan.check)

    def verdict(path: str) -> list[int] | None:
        """Frames to fetch ([] for none); None to fetch the whole file."""
        entry = index.entry(path)
        assert entry is not None
        if len(entry.frames) <= 1:
            return [] if file_crc32c(root / path) == entry.checksum else None
        differing = _frames_differing(entry, root / path)
        return None if len(differing) == len(entry.frames) else differing

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="pitr-crc") as pool:
        verdicts = list(pool.map(verdict, paths))
    plan.check = []
    for path, frames in zip(paths, verdicts, strict=True):
        entry = index.entry(path)
        assert entry is not None
        if frames is None:
            plan.write.append(path)
        elif frames or (root / path).stat().st_size != entry.size:
            plan.patch[path] = frames  # [] with another size: only cut to length
        else:
            plan.keep.append(path)
