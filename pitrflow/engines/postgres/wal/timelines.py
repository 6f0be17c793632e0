"""Which WAL segments, on which timelines, lead from a backup to a target."""

from __future__ import annotations

from dataclasses import dataclass

from pitrflow.engines.postgres.wal.walnames import TimelineSwitch, segment_name


@dataclass(frozen=True)
class TimelineSpan:
    """WAL positions [begin, end) that belong to `timeline` on the path."""

    timeline: int
    begin: int
    end: int | None


def timeline_path(target: int, histories: dict[int, list[TimelineSwitch]]) -> list[TimelineSpan]:
    """Oldest-first spans of the timelines the target timeline descends from."""
    switches = histories.get(target, [])
    spans: list[TimelineSpan] = []
    begin = 0
    for switch in switches:
        spans.append(TimelineSpan(switch.parent, begin, switch.switch_lsn))
        begin = switch.switch_lsn
    spans.append(TimelineSpan(target, begin, None))
    return spans


def span_of(lsn: int, path: list[TimelineSpan]) -> TimelineSpan | None:
    for span in path:
        if lsn >= span.begin and (span.end is None or lsn < span.end):
            return span
    return None


def segment_owner(segno: int, path: list[TimelineSpan], segment_size: int) -> int:
    """The timeline whose file holds segment `segno` on this path.

    An older timeline owns only the segments wholly before the segment that
    holds its switch point: that one is read from the newer timeline, as
    PostgreSQL's recovery does.
    """
    for span in path:
        if span.end is None or segno < span.end // segment_size:
            return span.timeline
    return path[-1].timeline


def required_segments(start_lsn: int, end_lsn: int, path: list[TimelineSpan],
                      segment_size: int) -> list[tuple[int, int, str]]:
    """(timeline, segno, name) for every segment holding WAL in [start_lsn, end_lsn).

    The segment containing a switch point is read from the newer timeline
    (segment_owner).
    """
    first = start_lsn // segment_size
    last = max(end_lsn - 1, start_lsn) // segment_size
    result = []
    for segno in range(first, last + 1):
        tli = segment_owner(segno, path, segment_size)
        result.append((tli, segno, segment_name(tli, segno, segment_size)))
    return result
