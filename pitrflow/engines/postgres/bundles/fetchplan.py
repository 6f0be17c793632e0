"""Which reads a restore makes, and in what order (pure).

Each read is one ranged GET (or pread) of consecutive frames of one object.
A bundle of which most is wanted is read whole, checked against the
object's SHA-256; otherwise only the wanted frames are read, in runs, each
frame checked against its own SHA-256.  Reads are capped in size so that
workers share a large file and memory stays bounded, and handed out largest
first so that no worker is left with one long read at the end.  The
control file is read apart: it is written last.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from pitrflow.engines.postgres.bundles.index import FileIndex, Frame, IndexEntry

PG_CONTROL = "global/pg_control"
# Which files to write, and of each, which frames (by position; None: all of them).
Wanted = Mapping[str, Collection[int] | None]
READ_BYTES = 16 * 1024 * 1024  # stored bytes per read, at most (whole bundles aside)
WHOLE_FRACTION = 0.5  # read a bundle whole when at least this much of it is wanted
MERGE_GAP = 256 * 1024  # read across unwanted frames shorter than this


@dataclass(frozen=True)
class Read:
    object: str
    offset: int
    length: int
    whole: bool  # the whole object: check its SHA-256 instead of each frame's
    frames: tuple[tuple[IndexEntry, Frame], ...]

    @property
    def raw_bytes(self) -> int:
        return sum(f.raw_length for _, f in self.frames)


@dataclass(frozen=True)
class FetchPlan:
    reads: tuple[Read, ...]  # largest first
    last: tuple[Read, ...]  # the control file's, after everything else
    data_bytes: int  # file bytes to be written


def _runs(name: str, frames: list[tuple[IndexEntry, Frame]]) -> list[Read]:
    """Consecutive frames grouped into reads of at most READ_BYTES (one frame at least)."""
    reads: list[Read] = []
    group: list[tuple[IndexEntry, Frame]] = []
    for item in frames:
        if group:
            start = group[0][1].offset
            end = group[-1][1].offset + group[-1][1].length
            frame = item[1]
            if frame.offset - end > MERGE_GAP or frame.offset + frame.length - start > READ_BYTES:
                reads.append(_read(name, group, False))
                group = []
        group.append(item)
    if group:
        reads.append(_read(name, group, False))
    return reads


def _read(name: str, frames: list[tuple[IndexEntry, Frame]], whole: bool,
          size: int | None = None) -> Read:
    if whole:
        assert size is not None
        return Read(name, 0, size, True, tuple(frames))
    start = frames[0][1].offset
    end = frames[-1][1].offset + frames[-1][1].length
    return Read(name, start, end - start, False, tuple(frames))


def plan_fetch(index: FileIndex, wanted: Wanted | None = None) -> FetchPlan:
    """Reads for every file in `wanted` (every file when None), the control file last."""
    per_object: dict[str, list[tuple[IndexEntry, Frame]]] = {}
    last: list[tuple[IndexEntry, Frame]] = []
    data_bytes = 0
    for entry in index.entries:
        if entry.type != "file" or (wanted is not None and entry.path not in wanted):
            continue
        only = None if wanted is None else wanted[entry.path]
        for n, frame in enumerate(entry.frames):
            if only is not None and n not in only:
                continue
            start, end, _ = entry.data_range(frame)
            data_bytes += end - start
            (last if entry.path == PG_CONTROL else per_object.setdefault(frame.object, [])
             ).append((entry, frame))
    reads: list[Read] = []
    for record in index.objects:
        frames = sorted(per_object.get(record.name, []), key=lambda item: item[1].offset)
        if not frames:
            continue
        wanted_bytes = sum(f.length for _, f in frames)
        if record.kind == "bundle" and wanted_bytes >= WHOLE_FRACTION * record.size:
            reads.append(_read(record.name, frames, True, record.size))
        else:
            reads.extend(_runs(record.name, frames))
    reads.sort(key=lambda r: (-r.raw_bytes, r.object, r.offset))
    last_reads = tuple(_runs(last[0][1].object, sorted(last, key=lambda i: i[1].offset))
                       ) if last else ()
    return FetchPlan(tuple(reads), last_reads, data_bytes)
