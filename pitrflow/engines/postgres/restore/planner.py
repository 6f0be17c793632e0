"""The restore planner: pure, from a catalog snapshot to a plan with reasons.

It never touches a server or a disk, so every refusal can be unit-tested and
shown by a dry run before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.postgres.catalog.manifest import BackupManifest
from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.engines.postgres.restore.tail import latest_point
from pitrflow.engines.postgres.restore.targets import NEXT_XID, end_mark, resolve
from pitrflow.engines.postgres.wal.timelines import required_segments, span_of, timeline_path
from pitrflow.engines.postgres.wal.walnames import format_lsn
from pitrflow.errors import RestoreRefusedError
from pitrflow.storage.layout import MarkEntry, PartialEntry, RestorePointEntry, WalEntry


@dataclass
class RestorePlan:
    instance: str
    target: RestoreTarget
    chain: list[BackupManifest]
    wal: list[WalEntry]
    timeline: int
    end_mark: MarkEntry | None
    window_from: datetime | None
    window_to: datetime | None
    segment_size: int
    reasons: list[str] = field(default_factory=list)
    # Follow mode: the last segment of `wal` is this partial upload, valid up to end_lsn.
    partial: PartialEntry | None = None
    end_lsn: int | None = None
    restore_point: RestorePointEntry | None = None

    @property
    def backup(self) -> BackupManifest:
        """The newest backup of the chain: its consistent point starts replay."""
        return self.chain[-1]

    @property
    def wal_bytes(self) -> int:
        return sum(e.size for e in self.wal)

    @property
    def wal_replay_bytes(self) -> int:
        return len(self.wal) * self.segment_size

    @property
    def last_segment(self) -> str | None:
        return self.wal[-1].segment if self.wal else None

    @property
    def disk_bytes_needed(self) -> int:
        """Local disk the restore will use at its peak."""
        data = self.backup.database_size_bytes
        if len(self.chain) > 1:
            # Each link is unpacked before pg_combinebackup writes the result.
            data += sum(b.database_size_bytes for b in self.chain)
        return data + self.wal_replay_bytes


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None


def _chain_of(backup: BackupManifest, catalog: Catalog) -> tuple[list[BackupManifest], str | None]:
    chain = [backup]
    current = backup
    while current.parent is not None:
        parent = catalog.backup(current.parent)
        if parent is None:
            why = catalog.rejected.get(current.parent, "not in the repository")
            return chain, f"backup {current.id} needs {current.parent}, which is unusable: {why}"
        if parent.timeline != current.timeline:
            return chain, (f"backup {current.id} is on timeline {current.timeline} but its "
                           f"parent {parent.id} is on timeline {parent.timeline}")
        chain.append(parent)
        current = parent
    chain.reverse()
    return chain, None


def recoverable_window(catalog: Catalog) -> Window:
    """From the earliest restorable backup's consistent point to the newest mark."""
    starts = [b.stop_time for b in catalog.backups if _chain_of(b, catalog)[1] is None]
    start = min(starts) if starts else None
    end = catalog.newest_mark.time if catalog.newest_mark else None
    if start is not None and end is not None and end < start:
        end = None
    return Window(start, end)


def plan_restore(catalog: Catalog, target: RestoreTarget) -> RestorePlan:
    if not catalog.backups:
        raise RestoreRefusedError(
            f"instance {catalog.instance} has no complete backup in the repository",
            f"take one with: pitr backup full {catalog.instance}",
        )
    window = recoverable_window(catalog)
    if target.time is not None:
        _check_window(catalog, target, window)
    bound = resolve(catalog, target)
    mark = end_mark(catalog, bound) if bound.wal else None
    reasons: list[str] = []
    # An open-ended target (latest, a transaction) replays everything stored: past the
    # newest mark into what follow mode stored since (restore.tail).
    open_ended = (bound.wal and bound.reach_time is None and bound.reach_lsn is None
                  and bound.timeline is None)
    latest = latest_point(catalog) if open_ended else None
    end_lsn: int | None = None
    if mark is not None:
        tli = latest.timeline if latest else mark.timeline
        end_lsn = latest.lsn if latest else mark.lsn
    else:
        newest = catalog.newest_backup_on(bound.timeline)
        if newest is None:
            raise RestoreRefusedError(f"no backup of {catalog.instance} is on timeline "
                                      f"{bound.timeline}", "pitr info lists the timelines")
        tli = newest.timeline
        reasons.append("stopping at the end of the backup, as soon as it is consistent"
                       if not bound.wal else
                       "no WAL has been shipped yet: restoring the newest backup as it ended")
    path = timeline_path(tli, catalog.histories)

    candidates = [
        b for b in reversed(catalog.backups)
        if bound.admits(b)
        and (s := span_of(b.start_lsn, path)) is not None and s.timeline == b.timeline
        # Its consistent point must lie on the path too, not on an abandoned branch.
        and (s.end is None or b.stop_lsn <= s.end)
        and (end_lsn is None or b.stop_lsn <= end_lsn)
    ]
    if bound.xid is not None and candidates:
        recorded = [b for b in candidates if NEXT_XID in b.extra]
        if not recorded:
            # Nothing tells which backup precedes the transaction: the oldest surely does.
            candidates = candidates[::-1]
            reasons.append(f"no backup recorded its next transaction id: starting from the "
                           f"oldest, so transaction {bound.xid} is replayed wherever it is")
    if not candidates:
        raise RestoreRefusedError(
            f"no backup of {catalog.instance} on the history of timeline {tli} "
            f"ended before {target.describe()}",
            "pitr info lists the backups and their timelines",
        )
    refused: list[str] = []
    for backup in candidates:
        chain, problem = _chain_of(backup, catalog)
        if problem is None:
            break
        refused.append(problem)
    else:
        raise RestoreRefusedError(refused[0], "restore an older target or take a new full backup")
    if refused:
        reasons.extend(refused)
        reasons.append(f"using the older complete chain ending in {backup.id}, "
                       "with WAL from its start")

    wal: list[WalEntry] = []
    partial: PartialEntry | None = None
    if end_lsn is not None:
        wanted = required_segments(backup.start_lsn, end_lsn, path, catalog.segment_size)
        for timeline, segno, name in wanted:
            entry = catalog.wal.get(timeline, {}).get(segno)
            if entry is None and (timeline, segno) == wanted[-1][:2]:
                partial = catalog.partial_for(timeline, segno)
                if partial is not None and partial.end_lsn >= end_lsn:
                    entry = as_wal_entry(partial)
                    reasons.append(f"the last segment {name} is partial: follow mode stored it "
                                   f"up to {format_lsn(partial.end_lsn)} (read at "
                                   f"{partial.time.isoformat()})")
                else:
                    partial = None
            if entry is None:
                raise RestoreRefusedError(
                    f"WAL segment {name} is missing from the repository: the WAL from "
                    f"{format_lsn(backup.start_lsn)} to {format_lsn(end_lsn)} has a gap",
                    "pick a target before the gap, or restore from a backup taken after it",
                )
            wal.append(entry)
        size = catalog.segment_size
        if latest is not None and mark is not None and (
                (latest.lsn - 1) // size > (mark.lsn - 1) // size):
            reasons.append(f"latest replays past the newest mark ({format_lsn(mark.lsn)}) "
                           f"to {format_lsn(latest.lsn)} on timeline {tli}: WAL stored since")
    reasons.insert(0, _why_backup(backup, target))
    if bound.restore_point is not None:
        point = bound.restore_point
        reasons.append(f"restore point {point.name!r} was created at "
                       f"{point.time.isoformat()} (LSN {format_lsn(point.lsn)})")
    if len(chain) > 1:
        reasons.append("chain: " + " -> ".join(b.id for b in chain))
    return RestorePlan(
        instance=catalog.instance, target=target, chain=chain, wal=wal, timeline=tli,
        end_mark=mark, window_from=window.start, window_to=window.end,
        segment_size=catalog.segment_size, reasons=reasons, partial=partial, end_lsn=end_lsn,
        restore_point=bound.restore_point,
    )


def as_wal_entry(partial: PartialEntry) -> WalEntry:
    """A partial as the segment file PostgreSQL asks for (zero-padded to a whole segment)."""
    return WalEntry(partial.key, partial.timeline, partial.segment, partial.sha256, partial.size)


def _why_backup(backup: BackupManifest, target: RestoreTarget) -> str:
    if target.kind in ("latest", "immediate"):
        return f"backup {backup.id} is the newest backup"
    if target.kind == "time":
        return (f"backup {backup.id} is the newest whose consistent point "
                f"({backup.stop_time.isoformat()}) is at or before the target")
    return (f"backup {backup.id} is the newest whose consistent point "
            f"({backup.stop_time.isoformat()}, LSN {format_lsn(backup.stop_lsn)}) is before "
            f"{target.describe()}")


def _check_window(catalog: Catalog, target: RestoreTarget, window: Window) -> None:
    assert target.time is not None
    if window.start is None:
        raise RestoreRefusedError(
            f"no backup of {catalog.instance} has a complete chain",
            "run pitr info to see which backups are unusable and why",
        )
    if target.time < window.start:
        raise RestoreRefusedError(
            f"target {target.describe()} is before the earliest recoverable point "
            f"{window.start.isoformat()}",
            "pick a later target; pitr info shows the recoverable window",
        )
    if window.end is None or target.time > window.end:
        newest = window.end.isoformat() if window.end else "none yet"
        raise RestoreRefusedError(
            f"target {target.describe()} is after the newest shipped WAL mark ({newest})",
            f"run pitr ship {catalog.instance} first, or pick an earlier target",
        )
