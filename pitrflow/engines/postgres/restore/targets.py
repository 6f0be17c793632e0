"""What a recovery target asks of a plan, in the catalog's terms; pure.

Each kind of target says two things: which backups may start the restore (their
consistent point must come before the target), and how far the stored WAL must
reach.  A target the catalog proves unreachable (an LSN before the oldest
restorable backup, a name never recorded, a point after the newest mark) is
refused here, in one line, before anything is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.postgres.catalog.manifest import BackupManifest
from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.engines.postgres.wal.walnames import format_lsn, parse_lsn
from pitrflow.errors import RestoreRefusedError, UsageError
from pitrflow.storage.layout import MarkEntry, RestorePointEntry

# Written into each backup's manifest at its end (extra): no transaction id at or
# above it had been assigned when the backup became consistent.
NEXT_XID = "next_xid"


@dataclass(frozen=True)
class Bound:
    """The constraints a target puts on the backup chosen and the WAL fetched."""

    before_time: datetime | None = None  # the backup's consistent point at or before this
    before_lsn: int | None = None        # ... and its stop LSN before this
    xid: int | None = None               # ... and transaction `xid` not yet assigned then
    reach_time: datetime | None = None   # the newest stored WAL reaches this time
    reach_lsn: int | None = None         # ... or this LSN
    wal: bool = True                     # False: nothing beyond the backup's own WAL
    timeline: int | None = None          # end marks only on this timeline
    restore_point: RestorePointEntry | None = None

    def admits(self, backup: BackupManifest) -> bool:
        if self.before_time is not None and backup.stop_time > self.before_time:
            return False
        if self.before_lsn is not None and backup.stop_lsn >= self.before_lsn:
            return False
        if self.xid is not None:
            recorded = backup.extra.get(NEXT_XID)
            # Older backups did not record it: they are kept as candidates, oldest wins.
            if recorded is not None and not _xid_before(int(recorded), self.xid):
                return False
        return True


def _xid_before(next_xid: int, xid: int) -> bool:
    """True when `xid` had not been assigned yet.  `next_xid` is a full 64-bit xid8; a
    32-bit `xid` (as xmin shows it) is taken in next_xid's epoch."""
    if xid >= 1 << 32 or next_xid < 1 << 32:
        return next_xid <= xid
    return next_xid & 0xFFFFFFFF <= xid


def resolve(catalog: Catalog, target: RestoreTarget) -> Bound:
    """The Bound for `target`; refuses what the catalog proves unreachable."""
    timeline = _timeline(catalog, target.timeline)
    kind = target.kind
    if kind == "time":
        return Bound(before_time=target.time, reach_time=target.time, timeline=timeline)
    if kind == "lsn":
        assert target.lsn is not None
        try:
            lsn = parse_lsn(target.lsn)
        except UsageError:
            raise UsageError(f"--target-lsn {target.lsn!r} is not a PostgreSQL LSN",
                             "write it like 0/16B3748 (pg_current_wal_lsn() shows one)") from None
        _refuse_outside(catalog, lsn, f"LSN {target.lsn}")
        return Bound(before_lsn=lsn, reach_lsn=lsn, timeline=timeline)
    if kind == "name":
        assert target.name is not None
        point = catalog.restore_point(target.name)
        if point is None:
            known = ", ".join(p.name for p in catalog.restore_points) or "none"
            raise RestoreRefusedError(
                f"restore point {target.name!r} of {catalog.instance} was never recorded "
                f"(recorded: {known})",
                f"create named points with pitr mark {catalog.instance} --name NAME")
        _refuse_outside(catalog, point.lsn, f"restore point {target.name!r}")
        return Bound(before_lsn=point.lsn, reach_lsn=point.lsn,
                     timeline=timeline or point.timeline, restore_point=point)
    if kind == "xid":
        return Bound(xid=target.xid, timeline=timeline)
    if kind == "immediate":
        return Bound(wal=False, timeline=timeline)
    return Bound(timeline=timeline)


def _timeline(catalog: Catalog, wanted: str | None) -> int | None:
    if wanted is None or wanted == "latest":
        return None
    if wanted == "current":
        newest = catalog.newest_backup_on()
        return newest.timeline if newest else None
    number = int(wanted)
    if number not in {m.timeline for m in catalog.marks} | {b.timeline for b in
                                                            catalog.backups}:
        raise RestoreRefusedError(f"timeline {number} of {catalog.instance} has no backup and "
                                  "no shipped WAL mark", "pitr info lists the timelines")
    return number


def _refuse_outside(catalog: Catalog, lsn: int, what: str) -> None:
    starts = [b.stop_lsn for b in catalog.backups]
    if starts and lsn <= min(starts):
        raise RestoreRefusedError(
            f"{what} is before the earliest recoverable point (LSN "
            f"{format_lsn(min(starts))}, the oldest backup's consistent point)",
            "pick a later target; pitr info shows the recoverable window")
    newest = max((m.lsn for m in catalog.marks), default=None)
    if newest is None or lsn > newest:
        shown = format_lsn(newest) if newest is not None else "none yet"
        raise RestoreRefusedError(
            f"{what} is after the newest shipped WAL mark (LSN {shown})",
            f"run pitr ship {catalog.instance} first, or pick an earlier target")


def end_mark(catalog: Catalog, bound: Bound) -> MarkEntry | None:
    """The first mark whose WAL reaches the target (the newest for open-ended targets)."""
    marks = [m for m in catalog.marks if bound.timeline is None or m.timeline == bound.timeline]
    if bound.reach_time is not None:
        return next((m for m in marks if m.time >= bound.reach_time), None)
    if bound.reach_lsn is not None:
        return next((m for m in marks if m.lsn >= bound.reach_lsn), None)
    return marks[-1] if marks else None
