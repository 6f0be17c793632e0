"""The PostgreSQL restore planner on hand-built catalogs.

Times are minutes after 09:00 UTC on 2026-11-26; WAL segments are 16 MB, so
LSN 0/5000028 lies in segment 5 (000000010000000000000005).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pitrflow.engines.postgres.catalog.manifest import BackupManifest, FileEntry
from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.engines.postgres.restore.planner import (
    RestorePlan,
    RestoreTarget,
    Window,
    plan_restore,
    recoverable_window,
)
from pitrflow.engines.postgres.wal.walnames import TimelineSwitch, segment_name
from pitrflow.errors import RestoreRefusedError, UsageError
from pitrflow.storage.layout import MarkEntry, WalEntry, mark_key, wal_key

SEG = 16 * 1024 * 1024
SHA = "a" * 64
BASE = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def backup(
    backup_id: str,
    start_lsn: int,
    stop_lsn: int,
    stop_minute: float,
    *,
    parent: str | None = None,
    timeline: int = 1,
    db_size: int = 1_000_000,
) -> BackupManifest:
    return BackupManifest(
        id=backup_id, instance="main", engine="postgresql",
        type="incremental" if parent else "full", parent=parent,
        start_time=at(stop_minute - 1), stop_time=at(stop_minute),
        start_lsn=start_lsn, stop_lsn=stop_lsn, timeline=timeline,
        server_version=180001, system_identifier="7441000000000000001", segment_size=SEG,
        files=(FileEntry("base.tar.zst", 4096, SHA),), database_size_bytes=db_size,
        duration_seconds=60.0, compression="zstd", tool_version="0.1.0",
    )


def wal_entry(timeline: int, segno: int) -> WalEntry:
    name = segment_name(timeline, segno, SEG)
    return WalEntry(wal_key("main", timeline, name, SHA), timeline, name, SHA, 1000 + segno)


def mark(minute: float, lsn: int, timeline: int = 1) -> MarkEntry:
    return MarkEntry(mark_key("main", at(minute), timeline, lsn), at(minute), timeline, lsn)


def catalog(
    backups: Iterable[BackupManifest],
    segments: dict[int, Iterable[int]],
    marks: Iterable[MarkEntry],
    *,
    rejected: dict[str, str] | None = None,
    histories: dict[int, list[TimelineSwitch]] | None = None,
) -> Catalog:
    """A catalog ordered as read_catalog orders one."""
    return Catalog(
        instance="main",
        backups=sorted(backups, key=lambda b: (b.stop_lsn, b.stop_time)),
        rejected=dict(rejected or {}),
        wal={tli: {n: wal_entry(tli, n) for n in nos} for tli, nos in segments.items()},
        histories=dict(histories or {}),
        marks=sorted(marks, key=lambda m: (m.time, m.lsn)),
        segment_size=SEG,
    )


def seg_names(plan: RestorePlan) -> list[str]:
    return [entry.segment for entry in plan.wal]


def refusal(cat: Catalog, target: RestoreTarget) -> RestoreRefusedError:
    with pytest.raises(RestoreRefusedError) as caught:
        plan_restore(cat, target)
    assert caught.value.hint, "every refusal says what to do"
    return caught.value


# Two full backups on timeline 1, WAL segments 2..9 shipped, three ship marks.
F1 = backup("20261126T090000Z", 0x2000028, 0x2000138, 1)
F2 = backup("20261126T100000Z", 0x5000028, 0x5000138, 61)
M1 = mark(30, 0x4000100)
M2 = mark(90, 0x7000200)
M3 = mark(120, 0x9000010)


def two_fulls(segments: Iterable[int] = range(2, 10)) -> Catalog:
    return catalog([F2, F1], {1: segments}, [M3, M1, M2])


# --- choosing the backup and the WAL ---


def test_picks_newest_backup_ended_before_target_and_wal_to_the_next_mark() -> None:
    plan = plan_restore(two_fulls(), RestoreTarget(at(75)))

    assert plan.chain == [F2]
    assert plan.backup is F2
    assert plan.end_mark == M2
    assert plan.timeline == 1
    assert seg_names(plan) == [
        "000000010000000000000005",
        "000000010000000000000006",
        "000000010000000000000007",
    ]
    assert plan.last_segment == "000000010000000000000007"
    assert plan.wal_bytes == 1005 + 1006 + 1007
    assert plan.wal_replay_bytes == 3 * SEG
    assert plan.window_from == at(1)
    assert plan.window_to == at(120)
    assert plan.reasons == [
        f"backup {F2.id} is the newest whose consistent point "
        f"({at(61).isoformat()}) is at or before the target"
    ]


def test_target_before_the_second_backup_uses_the_first() -> None:
    plan = plan_restore(two_fulls(), RestoreTarget(at(45)))
    assert plan.chain == [F1]
    assert plan.end_mark == M2
    assert seg_names(plan) == [segment_name(1, n, SEG) for n in range(2, 8)]


def test_target_exactly_on_a_mark_stops_at_that_mark() -> None:
    plan = plan_restore(two_fulls(), RestoreTarget(at(30)))
    assert plan.chain == [F1]
    assert plan.end_mark == M1
    assert seg_names(plan) == [
        "000000010000000000000002",
        "000000010000000000000003",
        "000000010000000000000004",
    ]


def test_target_exactly_at_a_backup_stop_time_may_use_it() -> None:
    plan = plan_restore(two_fulls(), RestoreTarget(at(61)))
    assert plan.chain == [F2]
    assert plan.end_mark == M2


def test_target_in_another_time_zone_is_the_same_instant() -> None:
    cest = timezone(timedelta(hours=2))
    plan = plan_restore(two_fulls(), RestoreTarget(at(75).astimezone(cest)))
    assert plan.chain == [F2]
    assert plan.end_mark == M2


def test_latest_uses_the_newest_mark_and_the_newest_backup() -> None:
    plan = plan_restore(two_fulls(), RestoreTarget(None))
    assert plan.target.is_latest
    assert plan.target.describe() == "latest"
    assert plan.chain == [F2]
    assert plan.end_mark == M3
    assert seg_names(plan) == [segment_name(1, n, SEG) for n in range(5, 10)]
    assert plan.reasons == [f"backup {F2.id} is the newest backup"]


def test_latest_without_any_shipped_wal_restores_the_newest_backup_alone() -> None:
    plan = plan_restore(catalog([F1, F2], {}, []), RestoreTarget(None))
    assert plan.chain == [F2]
    assert plan.wal == []
    assert plan.end_mark is None
    assert plan.last_segment is None
    assert "no WAL has been shipped yet: restoring the newest backup as it ended" in plan.reasons


def test_recoverable_window() -> None:
    assert recoverable_window(two_fulls()) == Window(at(1), at(120))
    assert recoverable_window(catalog([], {}, [])) == Window(None, None)
    assert recoverable_window(catalog([F1], {}, [])) == Window(at(1), None)
    # A newest mark older than every backup gives no usable end.
    assert recoverable_window(catalog([F2], {}, [M1])) == Window(at(61), None)


# --- refusals ---


def test_target_before_the_earliest_backup_is_refused() -> None:
    error = refusal(two_fulls(), RestoreTarget(at(0.5)))
    assert error.message == (
        f"target {at(0.5).isoformat()} is before the earliest recoverable point "
        f"{at(1).isoformat()}"
    )
    assert "before the earliest recoverable point" in error.message


def test_target_on_the_earliest_point_is_accepted() -> None:
    plan = plan_restore(two_fulls(), RestoreTarget(at(1)))
    assert plan.chain == [F1]
    assert plan.end_mark == M1


def test_target_after_the_newest_mark_is_refused() -> None:
    error = refusal(two_fulls(), RestoreTarget(at(121)))
    assert error.message == (
        f"target {at(121).isoformat()} is after the newest shipped WAL mark "
        f"({at(120).isoformat()})"
    )
    assert "pitr ship main" in (error.hint or "")


def test_target_time_with_no_mark_at_all_is_refused() -> None:
    error = refusal(catalog([F1], {}, []), RestoreTarget(at(5)))
    assert "after the newest shipped WAL mark (none yet)" in error.message


def test_target_on_the_newest_mark_is_accepted() -> None:
    plan = plan_restore(two_fulls(), RestoreTarget(at(120)))
    assert plan.end_mark == M3


def test_no_backup_at_all_is_refused() -> None:
    error = refusal(catalog([], {1: range(2, 10)}, [M1]), RestoreTarget(None))
    assert error.message == "instance main has no complete backup in the repository"


def test_missing_segment_in_the_range_is_refused_naming_it() -> None:
    cat = two_fulls(segments=[2, 3, 4, 5, 7, 8, 9])
    error = refusal(cat, RestoreTarget(at(75)))
    assert error.message == (
        "WAL segment 000000010000000000000006 is missing from the repository: the WAL from "
        "0/5000028 to 0/7000200 has a gap"
    )
    # A target whose WAL lies wholly before the gap is still fine.
    assert seg_names(plan_restore(cat, RestoreTarget(at(30)))) == [
        segment_name(1, n, SEG) for n in (2, 3, 4)
    ]


def test_missing_first_segment_of_the_backup_is_refused() -> None:
    error = refusal(two_fulls(segments=range(6, 10)), RestoreTarget(None))
    assert "WAL segment 000000010000000000000005 is missing" in error.message


def test_naive_datetime_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        RestoreTarget(datetime(2026, 11, 26, 10, 15))
    assert caught.value.message == "target time 2026-11-26T10:15:00 has no timezone"
    assert "+00:00" in (caught.value.hint or "")


# --- incremental chains ---

FULL = backup("full", 0x2000028, 0x2000138, 1, db_size=1000)
INC1 = backup("inc1", 0x4000028, 0x4000138, 31, parent="full", db_size=1100)
INC2 = backup("inc2", 0x6000028, 0x6000138, 61, parent="inc1", db_size=1200)
IM1 = mark(90, 0x7000200)
IM2 = mark(120, 0x9000010)


def chain_catalog(*backups: BackupManifest, rejected: dict[str, str] | None = None) -> Catalog:
    return catalog(backups, {1: range(2, 10)}, [IM1, IM2], rejected=rejected)


def test_incremental_chain_in_order() -> None:
    plan = plan_restore(chain_catalog(FULL, INC1, INC2), RestoreTarget(at(75)))
    assert [b.id for b in plan.chain] == ["full", "inc1", "inc2"]
    assert plan.backup is INC2
    assert seg_names(plan) == ["000000010000000000000006", "000000010000000000000007"]
    assert "chain: full -> inc1 -> inc2" in plan.reasons


def test_target_between_incrementals_uses_the_chain_up_to_it() -> None:
    plan = plan_restore(chain_catalog(FULL, INC1, INC2), RestoreTarget(at(45)))
    assert [b.id for b in plan.chain] == ["full", "inc1"]
    assert seg_names(plan) == [segment_name(1, n, SEG) for n in range(4, 8)]


def test_plan_after_the_last_incremental_needs_fewer_wal_segments() -> None:
    target = RestoreTarget(at(75))
    with_chain = plan_restore(chain_catalog(FULL, INC1, INC2), target)
    full_alone = plan_restore(chain_catalog(FULL), target)
    assert [b.id for b in full_alone.chain] == ["full"]
    assert len(with_chain.wal) == 2
    assert len(full_alone.wal) == 6
    assert len(with_chain.wal) < len(full_alone.wal)
    assert with_chain.end_mark == full_alone.end_mark == IM1


def test_broken_chain_falls_back_to_the_older_complete_full() -> None:
    why = "no manifest (incomplete or interrupted backup)"
    cat = chain_catalog(FULL, INC2, rejected={"inc1": why})
    plan = plan_restore(cat, RestoreTarget(at(75)))

    assert [b.id for b in plan.chain] == ["full"]
    assert seg_names(plan) == [segment_name(1, n, SEG) for n in range(2, 8)]
    assert f"backup inc2 needs inc1, which is unusable: {why}" in plan.reasons
    assert ("using the older complete chain ending in full, with WAL from its start"
            in plan.reasons)
    assert plan.reasons[0].startswith("backup full is the newest")


def test_chain_whose_full_is_damaged_falls_back_to_an_older_full() -> None:
    old = backup("old-full", 0x1000028, 0x1000138, 0.5, db_size=900)
    new_inc = backup("inc-a", 0x6000028, 0x6000138, 61, parent="new-full")
    why = "object base.tar.zst is missing"
    cat = catalog([old, new_inc], {1: range(1, 10)}, [IM1, IM2], rejected={"new-full": why})
    plan = plan_restore(cat, RestoreTarget(at(75)))
    assert plan.chain == [old]
    assert plan.reasons[1] == f"backup inc-a needs new-full, which is unusable: {why}"
    assert seg_names(plan)[0] == "000000010000000000000001"


def test_broken_chain_without_alternative_is_refused_naming_the_missing_link() -> None:
    why = "object base.tar.zst has 10 bytes, manifest says 4096"
    cat = chain_catalog(INC1, INC2, rejected={"full": why})
    error = refusal(cat, RestoreTarget(None))
    assert error.message == f"backup inc1 needs full, which is unusable: {why}"


def test_broken_chain_without_alternative_for_a_time_target() -> None:
    # With a time target the window check comes first: no chain is complete,
    # so the refusal points at `pitr info` instead of naming the link.
    cat = chain_catalog(INC1, INC2, rejected={"full": "no manifest"})
    assert recoverable_window(cat).start is None
    error = refusal(cat, RestoreTarget(at(75)))
    assert error.message == "no backup of main has a complete chain"
    assert "pitr info" in (error.hint or "")


def test_parent_absent_and_not_rejected_is_reported_as_not_in_the_repository() -> None:
    error = refusal(chain_catalog(INC2), RestoreTarget(None))
    assert error.message == "backup inc2 needs inc1, which is unusable: not in the repository"


def test_parent_on_another_timeline_breaks_the_chain() -> None:
    inc = backup("inc-t2", 0x6000028, 0x6000138, 61, parent="full", timeline=2)
    switch = {2: [TimelineSwitch(1, 0x5000000)]}
    cat = catalog([FULL, inc], {1: range(2, 5), 2: range(5, 10)},
                  [mark(120, 0x9000010, timeline=2)], histories=switch)
    plan = plan_restore(cat, RestoreTarget(None))
    assert plan.chain == [FULL]
    assert ("backup inc-t2 is on timeline 2 but its parent full is on timeline 1"
            in plan.reasons)


# --- timelines ---


def test_plan_follows_a_timeline_switch() -> None:
    # Timeline 2 forked from 1 at 0/4800000; a backup taken later on the
    # abandoned timeline 1 is not on timeline 2's history.
    abandoned = backup("tli1-late", 0x6000028, 0x6000138, 70)
    cat = catalog(
        [F1, abandoned],
        {1: range(2, 8), 2: range(4, 9)},
        [mark(100, 0x8000100, timeline=2)],
        histories={2: [TimelineSwitch(1, 0x4800000)]},
    )
    plan = plan_restore(cat, RestoreTarget(None))
    assert plan.timeline == 2
    assert plan.chain == [F1]
    assert seg_names(plan) == [
        "000000010000000000000002",
        "000000010000000000000003",
        "000000020000000000000004",
        "000000020000000000000005",
        "000000020000000000000006",
        "000000020000000000000007",
        "000000020000000000000008",
    ]


def test_backup_that_straddles_the_fork_point_is_not_used() -> None:
    old = backup("tli1-old", 0x2000028, 0x2000138, 1)
    straddling = backup("tli1-straddling", 0x4000028, 0x4800000, 40)
    cat = catalog(
        [old, straddling],
        {1: range(2, 5), 2: range(4, 7)},
        [mark(45, 0x4900000, timeline=1), mark(200, 0x6000100, timeline=2)],
        histories={2: [TimelineSwitch(1, 0x4400000)]},
    )
    plan = plan_restore(cat, RestoreTarget(at(180)))
    assert plan.timeline == 2
    assert plan.chain == [old]


# --- disk space ---


def test_disk_bytes_needed_for_a_full_backup() -> None:
    plan = plan_restore(chain_catalog(FULL), RestoreTarget(at(75)))
    assert len(plan.wal) == 6
    assert plan.disk_bytes_needed == 1000 + 6 * SEG


def test_disk_bytes_needed_for_a_chain_counts_every_unpacked_link() -> None:
    plan = plan_restore(chain_catalog(FULL, INC1, INC2), RestoreTarget(at(75)))
    assert len(plan.wal) == 2
    # The combined result (size of the newest) plus each unpacked link, plus WAL.
    assert plan.disk_bytes_needed == 1200 + (1000 + 1100 + 1200) + 2 * SEG
