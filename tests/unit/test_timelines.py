"""Which segments, on which timelines, recovery reads from a backup to a target."""

from __future__ import annotations

from pitrflow.engines.postgres.wal.timelines import (
    TimelineSpan,
    required_segments,
    span_of,
    timeline_path,
)
from pitrflow.engines.postgres.wal.walnames import TimelineSwitch, parse_history

SEG = 16 * 1024 * 1024  # 0x1000000


def names(segments: list[tuple[int, int, str]]) -> list[str]:
    return [name for _, _, name in segments]


# --- timeline_path and span_of ---


def test_path_of_a_timeline_without_history() -> None:
    assert timeline_path(1, {}) == [TimelineSpan(1, 0, None)]


def test_path_follows_the_history_file_oldest_first() -> None:
    histories = {
        3: parse_history("1\t0/3000000\tno recovery target specified\n\n"
                         "2\t0/5800000\tbefore 2026-11-26 09:45:00+00\n"),
        2: parse_history("1\t0/3000000\tno recovery target specified\n"),
    }
    assert timeline_path(3, histories) == [
        TimelineSpan(1, 0, 0x3000000),
        TimelineSpan(2, 0x3000000, 0x5800000),
        TimelineSpan(3, 0x5800000, None),
    ]
    assert timeline_path(2, histories) == [
        TimelineSpan(1, 0, 0x3000000),
        TimelineSpan(2, 0x3000000, None),
    ]


def test_span_of_places_the_switch_point_on_the_new_timeline() -> None:
    path = timeline_path(2, {2: [TimelineSwitch(1, 0x3800000)]})
    assert span_of(0, path) == TimelineSpan(1, 0, 0x3800000)
    assert span_of(0x37FFFFF, path) == TimelineSpan(1, 0, 0x3800000)
    assert span_of(0x3800000, path) == TimelineSpan(2, 0x3800000, None)
    assert span_of(0xFFFFFFFFFF, path) == TimelineSpan(2, 0x3800000, None)


def test_span_of_outside_a_bounded_path_is_none() -> None:
    path = [TimelineSpan(1, 0x1000000, 0x2000000)]
    assert span_of(0x0FFFFFF, path) is None
    assert span_of(0x2000000, path) is None
    assert span_of(0x1000000, path) == path[0]


# --- required_segments ---


def test_single_timeline() -> None:
    path = timeline_path(1, {})
    segments = required_segments(0x2000028, 0x5000100, path, SEG)
    assert segments == [
        (1, 2, "000000010000000000000002"),
        (1, 3, "000000010000000000000003"),
        (1, 4, "000000010000000000000004"),
        (1, 5, "000000010000000000000005"),
    ]


def test_end_on_a_segment_boundary_does_not_need_the_next_segment() -> None:
    path = timeline_path(1, {})
    assert names(required_segments(0x2000028, 0x4000000, path, SEG)) == [
        "000000010000000000000002",
        "000000010000000000000003",
    ]


def test_empty_range_still_needs_the_start_segment() -> None:
    path = timeline_path(1, {})
    assert names(required_segments(0x2000028, 0x2000028, path, SEG)) == [
        "000000010000000000000002",
    ]


def test_range_across_the_xlogid_boundary() -> None:
    path = timeline_path(1, {})
    assert names(required_segments(0xFE000000, 0x100000010, path, SEG)) == [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
    ]


def test_switch_in_the_middle_of_a_segment() -> None:
    # Timeline 2 forked from 1 at 0/3800000, halfway through segment 3: the
    # segment holding the switch is read from the new timeline, the ones
    # before it from the old.
    path = timeline_path(2, {2: [TimelineSwitch(1, 0x3800000)]})
    segments = required_segments(0x1000028, 0x5000100, path, SEG)
    assert segments == [
        (1, 1, "000000010000000000000001"),
        (1, 2, "000000010000000000000002"),
        (2, 3, "000000020000000000000003"),
        (2, 4, "000000020000000000000004"),
        (2, 5, "000000020000000000000005"),
    ]


def test_switch_exactly_on_a_segment_boundary() -> None:
    path = timeline_path(2, {2: [TimelineSwitch(1, 0x3000000)]})
    assert names(required_segments(0x1000028, 0x4000100, path, SEG)) == [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000020000000000000003",
        "000000020000000000000004",
    ]


def test_start_after_the_switch_reads_only_the_new_timeline() -> None:
    path = timeline_path(2, {2: [TimelineSwitch(1, 0x3800000)]})
    assert names(required_segments(0x4000028, 0x5000000, path, SEG)) == [
        "000000020000000000000004",
    ]


def test_range_ending_before_the_switch_stays_on_the_old_timeline() -> None:
    path = timeline_path(2, {2: [TimelineSwitch(1, 0x5800000)]})
    assert names(required_segments(0x1000028, 0x3000100, path, SEG)) == [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ]


def test_two_switches() -> None:
    history = ("1\t0/3800000\tno recovery target specified\n"
               "2\t0/6000000\tbefore 2026-11-26 09:45:00+00\n")
    path = timeline_path(3, {3: parse_history(history)})
    segments = required_segments(0x2000028, 0x7000100, path, SEG)
    assert segments == [
        (1, 2, "000000010000000000000002"),
        (2, 3, "000000020000000000000003"),
        (2, 4, "000000020000000000000004"),
        (2, 5, "000000020000000000000005"),
        (3, 6, "000000030000000000000006"),
        (3, 7, "000000030000000000000007"),
    ]


def test_two_switches_inside_one_segment_read_it_from_the_newest() -> None:
    history = "1\t0/3100000\tfirst\n2\t0/3800000\tsecond\n"
    path = timeline_path(3, {3: parse_history(history)})
    assert required_segments(0x2000028, 0x4000100, path, SEG) == [
        (1, 2, "000000010000000000000002"),
        (3, 3, "000000030000000000000003"),
        (3, 4, "000000030000000000000004"),
    ]


def test_switch_with_64mb_segments() -> None:
    seg64 = 64 * 1024 * 1024
    path = timeline_path(2, {2: [TimelineSwitch(1, 0x108000000)]})  # 1/8000000 = segno 66
    assert names(required_segments(0xFC000000, 0x10C000000, path, seg64)) == [
        "00000001000000000000003F",
        "000000010000000100000000",
        "000000010000000100000001",
        "000000020000000100000002",
    ]
