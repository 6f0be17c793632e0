"""Small pure helpers of follow mode: what is in the receiver's directory, and when to act.

pg_receivewal writes the segment in progress as `<segment>.partial`,
zero-padded to a whole segment, and renames it to `<segment>` once complete;
timeline history files appear as `<TLI>.history`.  On start it resumes after
the newest segment it finds, so the follower leaves a sparse placeholder
named after the newest stored segment, which must never be stored itself.
"""

from __future__ import annotations

import collections
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pitrflow.engines.postgres.wal.walnames import (
    is_history_name,
    is_segment_name,
    parse_segment_name,
)

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    timeline: int
    segno: int

    @property
    def segment(self) -> str:
        return self.path.name.removesuffix(PARTIAL_SUFFIX)


@dataclass(frozen=True)
class SpoolScan:
    completed: list[SpoolFile]  # oldest first
    partials: list[SpoolFile]  # newest first
    histories: list[Path]


def scan_spool(spool: Path, segment_size: int) -> SpoolScan:
    completed: list[SpoolFile] = []
    partials: list[SpoolFile] = []
    histories: list[Path] = []
    for path in spool.iterdir():
        name = path.name
        if is_history_name(name):
            histories.append(path)
        elif is_segment_name(name):
            completed.append(SpoolFile(path, *parse_segment_name(name, segment_size)))
        elif name.endswith(PARTIAL_SUFFIX) and is_segment_name(name[:-len(PARTIAL_SUFFIX)]):
            tli, segno = parse_segment_name(name[:-len(PARTIAL_SUFFIX)], segment_size)
            partials.append(SpoolFile(path, tli, segno))
    completed.sort(key=lambda f: (f.segno, f.timeline))
    partials.sort(key=lambda f: (f.segno, f.timeline), reverse=True)
    return SpoolScan(completed, partials, sorted(histories))


def looks_like_wal(head: bytes) -> bool:
    """A segment starts with a long page header: a non-zero magic and the long-header flag.

    A placeholder is all zeros (sparse), so this keeps it out of the repository.
    """
    if len(head) < 4:
        return False
    magic, info = struct.unpack_from("<HH", head)
    return magic != 0 and bool(info & 0x0002)  # XLP_LONG_HEADER


_SHORT_HEADER = 24  # XLogPageHeaderData
_LONG_HEADER = 40   # XLogLongPageHeaderData, on a segment's first page


def written_end(data: bytes, segno: int, segment_size: int) -> int:
    """The LSN the receiver has certainly written to in a segment file: just past the page
    header of the last page that carries its own address.

    pg_receivewal zero-fills a segment in progress, and every WAL page starts with
    a header naming its position, so the pages written are those whose header
    says where they are.  Read from the file itself, this needs no report from
    the server (whose view of the receiver lags by up to a status interval).
    """
    start = segno * segment_size
    if len(data) < _LONG_HEADER or not looks_like_wal(data[:4]):
        return start
    magic = struct.unpack_from("<H", data)[0]
    block = struct.unpack_from("<I", data, 36)[0]  # xlp_xlog_blcksz of the long header
    if block <= 0 or block > segment_size or segment_size % block:
        return start
    end = start + _LONG_HEADER
    for offset in range(block, min(len(data), segment_size), block):
        page_magic, = struct.unpack_from("<H", data, offset)
        page_addr, = struct.unpack_from("<Q", data, offset + 8)
        if page_magic != magic or page_addr != start + offset:
            break
        end = start + offset + _SHORT_HEADER
    return end


def partial_end(segno: int, segment_size: int, received_lsn: int | None,
                previous_end: int | None, data: bytes = b"") -> int:
    """The LSN a partial upload of segment `segno` is known to hold WAL up to.

    The pages the file itself shows written bound it from below, and so does the
    receiver's write position as the server last heard it; the file only grows,
    so an earlier bound still holds.  With none, only the segment's start is known.
    """
    start = segno * segment_size
    end = max(start, written_end(data, segno, segment_size)) if data else start
    if received_lsn is not None:
        end = max(end, min(received_lsn, start + segment_size))
    if previous_end is not None:
        end = max(end, previous_end)
    return end


def next_partial_start(last_start: float, interval: float, last_seconds: float) -> float:
    """When to read the partial next, so each upload finishes within `interval` of the last read.

    `partial_interval` promises that the newest partial in the repository was
    read at most that long ago: starting the next read early by the time the
    last upload took (and a tenth of the interval for jitter) keeps it.
    """
    lead = min(last_seconds + interval / 10, interval / 2)
    return last_start + interval - lead


class Backoff:
    """1, 2, 4 ... seconds up to `ceiling`; reset() after a session that streamed."""

    def __init__(self, first: float = 1.0, ceiling: float = 30.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.ceiling)
        return delay

    def reset(self) -> None:
        self._next = self.first


class RecoveryPoint:
    """The newest moment at which everything the server had flushed is now stored.

    Each cycle samples (server time, server flush LSN); once the stored WAL
    reaches a sample's LSN, that sample's time is recoverable.
    """

    def __init__(self, keep: int = 4096) -> None:
        self._samples: collections.deque[tuple[datetime, int, int]] = collections.deque(
            maxlen=keep)
        self.point: datetime | None = None

    def observe(self, when: datetime, timeline: int, flush_lsn: int) -> None:
        self._samples.append((when, timeline, flush_lsn))

    def advance(self, stored: dict[int, int]) -> datetime | None:
        while self._samples:
            when, timeline, lsn = self._samples[0]
            if stored.get(timeline, -1) < lsn:
                break
            self.point = when if self.point is None else max(self.point, when)
            self._samples.popleft()
        return self.point

    def forget(self) -> None:
        """A new session (restart, failover): old samples may never be reached on this server."""
        self._samples.clear()
