"""Follow mode's pure parts: partial keys, the latest point and plans through a partial,
the follower's schedule and recovery point, and the judgement of its heartbeat."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pitrflow.config import parse_config
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.restore.tail import latest_point
from pitrflow.engines.postgres.wal.follow_spool import (
    Backoff,
    RecoveryPoint,
    looks_like_wal,
    next_partial_start,
    partial_end,
    scan_spool,
    written_end,
)
from pitrflow.engines.postgres.wal.follow_status import (
    FollowerStatus,
    dump_status,
    follower_in_charge,
    judge,
    load_status,
)
from pitrflow.engines.postgres.wal.walnames import TimelineSwitch, segment_name
from pitrflow.errors import ConfigError, RepositoryError
from pitrflow.storage.layout import PartialEntry, WalEntry, parse_key, partial_key
from tests.unit.test_planner import F2, SEG, at, catalog, mark

SHA = "b" * 64
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def partial(timeline: int, segno: int, end_lsn: int, minute: float = 121) -> PartialEntry:
    name = segment_name(timeline, segno, SEG)
    return PartialEntry(partial_key("main", timeline, name, end_lsn, at(minute), SHA), timeline,
                        name, end_lsn, at(minute), SHA, 5000)


def test_partial_keys_parse_back_and_are_never_whole_segments() -> None:
    entry = partial(1, 10, 0xA0012F8)
    assert entry.key == ("main/partial/00000001/00000001000000000000000A_000000000A0012F8_"
                         f"20261126T110100.000000Z-{SHA}.zst")
    parsed = parse_key("main", entry.key, 5000)
    assert parsed == entry and not isinstance(parsed, WalEntry)
    # A whole segment's key shape under partial/ is not a partial, nor anything else.
    assert parse_key("main", f"main/partial/00000001/{entry.segment}-{SHA}.zst", 1) is None


def test_latest_reaches_through_whole_segments_and_into_the_newest_partial() -> None:
    cat = catalog([F2], {1: range(5, 12)}, [mark(120, 0x9000010)])
    cat.partials = [partial(1, 12, 0xC000500, 121), partial(1, 12, 0xC0A0000, 122),
                    partial(1, 11, 0xB000100, 119)]  # the last one: its whole segment is stored
    point = latest_point(cat)
    assert point is not None and point.partial == cat.partials[1]
    assert point.lsn == 0xC0A0000 and point.read_at == at(122)
    assert cat.superseded_partials() == [cat.partials[0], cat.partials[2]]

    plan = plan_restore(cat, RestoreTarget(None))
    assert [e.segment for e in plan.wal] == [segment_name(1, n, SEG) for n in range(5, 13)]
    assert plan.wal[-1].key == cat.partials[1].key and plan.partial == cat.partials[1]
    assert any("is partial" in r for r in plan.reasons)
    assert any("past the newest mark" in r for r in plan.reasons)


def test_a_partial_after_a_gap_is_not_used() -> None:
    cat = catalog([F2], {1: [5, 6, 7, 8, 9]}, [mark(120, 0x9000010)])
    cat.partials = [partial(1, 11, 0xB000100)]
    point = latest_point(cat)
    assert point is not None and point.partial is None and point.lsn == 0xA000000
    assert plan_restore(cat, RestoreTarget(None)).partial is None


def test_a_time_target_whose_mark_lies_in_a_partial_uses_the_partial() -> None:
    cat = catalog([F2], {1: range(5, 10)}, [mark(120, 0x9000010), mark(125, 0xA000400)])
    cat.partials = [partial(1, 10, 0xA000800, 126)]
    plan = plan_restore(cat, RestoreTarget(at(123)))
    assert plan.end_mark == cat.marks[-1] and plan.partial == cat.partials[0]
    cat.partials = []
    with pytest.raises(Exception, match="000000010000000000000010|00000001000000000000000A"):
        plan_restore(cat, RestoreTarget(at(123)))


def test_latest_follows_a_new_timeline_stored_before_its_first_mark() -> None:
    cat = catalog([F2], {1: range(5, 10), 2: [9]}, [mark(120, 0x9000010)],
                  histories={2: [TimelineSwitch(1, 0x9000200)]})
    cat.partials = [partial(2, 10, 0xA000100)]
    plan = plan_restore(cat, RestoreTarget(None))
    assert plan.timeline == 2
    assert [e.segment for e in plan.wal][-2:] == [segment_name(2, 9, SEG),
                                                  segment_name(2, 10, SEG)]


def test_scan_spool_and_the_placeholder_test(tmp_path: Path) -> None:
    for name in ("000000010000000000000003", "000000010000000000000004.partial",
                 "000000020000000000000004.partial", "00000002.history", ".follower.lock"):
        (tmp_path / name).write_bytes(b"")
    scan = scan_spool(tmp_path, SEG)
    assert [f.segno for f in scan.completed] == [3]
    assert [(f.timeline, f.segno) for f in scan.partials] == [(2, 4), (1, 4)]
    assert scan.partials[0].segment == "000000020000000000000004"
    assert [p.name for p in scan.histories] == ["00000002.history"]
    assert not looks_like_wal(bytes(8))
    assert looks_like_wal(bytes.fromhex("18d10200") + bytes(4))  # magic, XLP_LONG_HEADER


def test_partial_end_is_a_lower_bound_inside_the_segment() -> None:
    start = 10 * SEG
    assert partial_end(10, SEG, None, None) == start
    assert partial_end(10, SEG, start + 500, None) == start + 500
    assert partial_end(10, SEG, start + 500, start + 900) == start + 900
    assert partial_end(10, SEG, start - 5, None) == start
    assert partial_end(10, SEG, start + 2 * SEG, None) == start + SEG


def _segment(segno: int, pages_written: int, block: int = 8192) -> bytes:
    """A segment file as pg_receivewal leaves it: written pages, then zeros."""
    start = segno * SEG
    data = bytearray(SEG)
    for page in range(pages_written):
        offset = page * block
        info = 0x0002 if page == 0 else 0  # XLP_LONG_HEADER on the first page
        struct.pack_into("<HHIQI", data, offset, 0xD118, info, 1, start + offset, 0)
        if page == 0:
            struct.pack_into("<QII", data, 24, 7, SEG, block)
        data[offset + 40: offset + 60] = b"\x07" * 20  # some record bytes
    return bytes(data)


def test_the_written_end_of_a_segment_comes_from_its_page_headers() -> None:
    start = 10 * SEG
    assert written_end(_segment(10, 3), 10, SEG) == start + 2 * 8192 + 24
    assert written_end(_segment(10, 1), 10, SEG) == start + 40
    assert written_end(bytes(SEG), 10, SEG) == start  # a placeholder: nothing written
    # A page left from another position (a recycled file) ends what is known written.
    stale = bytearray(_segment(10, 4))
    struct.pack_into("<Q", stale, 2 * 8192 + 8, 123)
    assert written_end(bytes(stale), 10, SEG) == start + 8192 + 24
    # The server's report may lag the file: the file's own pages win.
    assert partial_end(10, SEG, start + 100, None, _segment(10, 3)) == start + 2 * 8192 + 24


def test_next_partial_read_leaves_room_for_the_upload() -> None:
    assert next_partial_start(100.0, 10.0, 0.2) == pytest.approx(108.8)
    assert next_partial_start(100.0, 2.0, 5.0) == pytest.approx(101.0)  # never over half early


def test_backoff_doubles_to_a_ceiling_and_resets() -> None:
    backoff = Backoff(1, 8)
    assert [backoff.next() for _ in range(5)] == [1, 2, 4, 8, 8]
    backoff.reset()
    assert backoff.next() == 1


def test_recovery_point_advances_only_when_the_stored_wal_reaches_a_sample() -> None:
    point = RecoveryPoint()
    point.observe(at(1), 1, 1000)
    point.observe(at(2), 1, 2000)
    assert point.advance({1: 999}) is None
    assert point.advance({1: 1500}) == at(1)
    assert point.advance({1: 2000}) == at(2)
    point.observe(at(3), 2, 3000)
    assert point.advance({1: 9999}) == at(2)  # another timeline's position does not count


def _status(**changes: object) -> FollowerStatus:
    base = FollowerStatus("main", "streaming", "host1", 42, NOW - timedelta(hours=1),
                          NOW - timedelta(seconds=3), False, 10, timeline=1,
                          recovery_point=NOW - timedelta(seconds=8),
                          last_upload_at=NOW - timedelta(seconds=4))
    return base.with_(**changes)


def _instance(extra: str = ""):  # type: ignore[no-untyped-def]
    text = (f'[repository]\npath = "/r"\n[instances.main]\nengine = "postgresql"\n'
            f'host = "h"\n{extra}')
    return parse_config(text, Path("/etc/p.toml")).instance("main")


def test_judge_the_heartbeat() -> None:
    instance = _instance("follow = true\n[instances.main.check]\nmax_follower_lag_seconds = 30")
    ok = judge(instance, _status(), NOW)
    assert ok.ok and "lag 8 s" in ok.detail and ok.lag_seconds == pytest.approx(8)
    assert "has ever reported" in judge(instance, None, NOW).problem
    assert "gone" in judge(instance, _status(updated_at=NOW - timedelta(minutes=5)), NOW).problem
    behind = judge(instance, _status(recovery_point=NOW - timedelta(minutes=2),
                                     message="cannot connect"), NOW)
    assert not behind.ok and "120 s behind" in behind.problem and "cannot connect" in behind.problem
    assert "stopped" in judge(instance, _status(state="stopped"), NOW).problem


def test_who_ships_batch_or_follower() -> None:
    batch, follow = _instance(), _instance("follow = true")
    assert follower_in_charge(follow, None, NOW)
    assert not follower_in_charge(batch, None, NOW)
    assert follower_in_charge(batch, _status(), NOW)  # a follower run by hand holds the slot
    assert not follower_in_charge(batch, _status(state="stopped"), NOW)
    assert not follower_in_charge(batch, _status(updated_at=NOW - timedelta(hours=1)), NOW)


def test_status_record_round_trips_and_is_sealed() -> None:
    status = _status(counts={"segments": 3})
    data = dump_status(status)
    assert load_status(data, "k") == status
    with pytest.raises(RepositoryError):
        load_status(data.replace(b"host1", b"host2"), "k")


@pytest.mark.parametrize("line,why", [
    ("partial_interval = 0", "partial_interval"),
    ("mark_interval = 100000", "mark_interval"),
    ('partial_interval = "10"', "partial_interval"),
    ("synchronous = 1", "synchronous"),
])
def test_follow_keys_are_validated(line: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"instances.main.{why}"):
        _instance(line)


def test_follow_defaults() -> None:
    instance = _instance('follow_dir = "spool"')
    assert (instance.partial_interval, instance.mark_interval, instance.synchronous,
            instance.follow) == (10, 60, False, False)
    assert instance.follow_dir == Path("/etc/spool")
    assert instance.check.max_follower_lag_seconds == 60.0


def test_retention_deletes_old_and_superseded_partials_only() -> None:
    from pitrflow.config import RetentionConfig
    from pitrflow.engines.postgres.catalog.retention import plan_expire
    from pitrflow.engines.postgres.render import expire_text
    from tests.unit.test_planner import F1

    cat = catalog([F1, F2], {1: range(2, 10)}, [mark(120, 0x9000010)])
    old, superseded, newest = partial(1, 3, 0x3000100), partial(1, 9, 0x9000100), partial(
        1, 10, 0xA000100)
    cat.partials = [old, superseded, newest]
    plan = plan_expire(cat, RetentionConfig(full_count=1), NOW)
    assert plan.delete_partials == [old, superseded]
    assert "2 partial segments" in expire_text(plan)


def test_a_follower_that_failed_is_not_healthy() -> None:
    instance = _instance("follow = true")
    health = judge(instance, _status(state="failed", message="failed: disk full"), NOW)
    assert not health.ok and "disk full" in health.problem
