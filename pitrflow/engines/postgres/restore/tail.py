"""How far a restore to `latest` replays: the newest mark, then what follow mode stored after it.

Pure, like the planner.  A batch ship ends on a segment boundary at its mark,
so there the answer is the mark.  A follower writes marks on a cadence but
stores every completed segment within seconds and the segment in progress
as a partial object, so `latest` reaches past the newest mark: through every
whole segment stored after it on the same history, then into the newest
partial after those.  PostgreSQL replays a zero-padded partial segment up to
its valid end, so the partial is handed over as the segment file it asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.engines.postgres.wal.timelines import segment_owner, timeline_path
from pitrflow.engines.postgres.wal.walnames import segment_name
from pitrflow.storage.layout import MarkEntry, PartialEntry


@dataclass(frozen=True)
class LatestPoint:
    """Stored WAL reaches at least `lsn` on `timeline`; `partial` when its last segment is one."""

    timeline: int
    lsn: int
    segment: str
    partial: PartialEntry | None

    @property
    def read_at(self) -> datetime | None:
        """When the partial was read from the receiver (everything it had then is in it)."""
        return self.partial.time if self.partial else None


def latest_timeline(catalog: Catalog, mark: MarkEntry) -> int:
    """The newest timeline with stored WAL whose history passes through the mark.

    After a failover the follower stores WAL (and the history file) of the new
    timeline before its first mark there; `latest` follows it.
    """
    best = mark.timeline
    stored = set(catalog.wal) | {p.timeline for p in catalog.partials}
    for tli in sorted(stored):
        if tli <= best:
            continue
        span = next((s for s in timeline_path(tli, catalog.histories)
                     if s.timeline == mark.timeline), None)
        if span is not None and (span.end is None or mark.lsn <= span.end):
            best = tli
    return best


def latest_point(catalog: Catalog) -> LatestPoint | None:
    """None before the first mark: without one no restore target is known to be reachable."""
    mark = catalog.newest_mark
    if mark is None:
        return None
    tli = latest_timeline(catalog, mark)
    path = timeline_path(tli, catalog.histories)
    size = catalog.segment_size
    segno = (mark.lsn - 1) // size
    lsn = mark.lsn
    while True:
        owner = segment_owner(segno, path, size)
        if segno in catalog.wal.get(owner, {}):
            lsn = max(lsn, (segno + 1) * size)
            segno += 1
            continue
        partial = catalog.partial_for(owner, segno)
        if partial is not None and partial.end_lsn >= lsn:
            return LatestPoint(tli, partial.end_lsn, partial.segment, partial)
        last = (lsn - 1) // size
        return LatestPoint(tli, lsn, segment_name(segment_owner(last, path, size), last, size),
                           None)
