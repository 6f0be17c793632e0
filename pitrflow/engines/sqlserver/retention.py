"""SQL Server retention: a pure plan of which backup sets to delete and why.

The catalog in, a decision with a reason for every backup set out, one database at
a time.  The rules mirror PostgreSQL's (``pitrflow.engines.postgres.catalog.retention``):

* chain anchors are the restorable fulls (not copy-only, written to disk); the
  newest one is always kept, ``full_count`` keeps the newest N, ``window_days``
  keeps the newest full that finished at or before now - window and every newer one;
* a kept full keeps every differential based on it; a differential of a deleted
  full goes with it;
* logs are kept from the log holding the oldest kept full's last LSN onward: one
  whose last LSN is at or before it is never restored after any kept full
  (the planner's own cut, ``last_lsn > anchor.last_lsn``);
* a copy-only full anchors no chain: it is kept while it is newer than the oldest
  kept full and deleted otherwise.

Backups are ordered by LSN within a recovery fork, and forks by msdb's
``backup_set_id`` (LSNs of different forks overlap, and ids only grow), never by
clock times: only the window compares times, in UTC.  When a rule is not sure a
backup is useless (a fork without a full of its own, a differential whose base is
not stored, a time msdb did not record), the backup is kept and the reason says why.
Backup directories without a valid manifest are not retention's business: they
are not in the catalog's records at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pitrflow.config import RetentionConfig
from pitrflow.engines.sqlserver.catalog import SqlServerCatalog
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import BackupSetRow, row_times_utc
from pitrflow.engines.sqlserver.planner import is_differential_of, is_restore_base
from pitrflow.engines.sqlserver.record import BackupKind, SqlServerBackupRecord

NO_POLICY = "no retention policy is configured"


@dataclass(frozen=True)
class RetentionDecision:
    """Keep or delete one backup set, and why."""

    backup_id: str
    database: str
    kind: BackupKind
    backup_set_id: int
    keep: bool
    reason: str


@dataclass
class SqlServerExpirePlan:
    """Every decision, plus interrupted expires to finish and notes for the reader."""

    instance: str
    decisions: list[RetentionDecision] = field(default_factory=list)
    finish_expiring: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def delete_backups(self) -> list[str]:
        return [d.backup_id for d in self.decisions if not d.keep]

    @property
    def kept_backups(self) -> list[str]:
        return [d.backup_id for d in self.decisions if d.keep]

    @property
    def empty(self) -> bool:
        return not (self.delete_backups or self.finish_expiring)

    def decision(self, backup_id: str) -> RetentionDecision | None:
        return next((d for d in self.decisions if d.backup_id == backup_id), None)


def _head(record: SqlServerBackupRecord) -> BackupSetRow:
    return record.rows[0]


def _finish(record: SqlServerBackupRecord) -> datetime | None:
    """UTC finish time, or None when msdb did not know the server's offset."""
    try:
        return row_times_utc(_head(record))[1]
    except SqlServerPlanError:
        return None


class _Order:
    """Sort keys for one database: forks by their newest backup set, then LSN."""

    def __init__(self, records: Sequence[SqlServerBackupRecord]) -> None:
        newest: dict[str | None, int] = {}
        for record in records:
            fork = _head(record).recovery_fork_guid
            newest[fork] = max(newest.get(fork, 0), record.backup_set_id)
        self.rank = {fork: rank for rank, fork in
                     enumerate(sorted(newest, key=lambda f: newest[f]))}

    def fork(self, record: SqlServerBackupRecord) -> int:
        return self.rank[_head(record).recovery_fork_guid]

    def key(self, record: SqlServerBackupRecord) -> tuple[int, int, int]:
        return self.fork(record), _head(record).last_lsn, record.backup_set_id


def plan_sqlserver_expire(catalog: SqlServerCatalog, policy: RetentionConfig,
                          now: datetime) -> SqlServerExpirePlan:
    """Decide every backup set of every database in the catalog; ``now`` is aware."""
    plan = SqlServerExpirePlan(instance=catalog.instance,
                               finish_expiring=sorted(catalog.expiring))
    if not catalog.records:
        plan.notes.append("no complete SQL Server backups: nothing to expire")
    for database in catalog.databases():
        records = [r for r in catalog.records if r.database == database]
        plan.decisions.extend(_plan_database(database, records, policy, now, plan.notes))
    left = sorted(set(catalog.rejected) - set(catalog.expiring))
    if left:
        plan.notes.append(f"{len(left)} backup director{'y' if len(left) == 1 else 'ies'} "
                          f"without a valid manifest left alone (not backups): "
                          f"{', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
    return plan


def _plan_database(database: str, records: list[SqlServerBackupRecord],
                   policy: RetentionConfig, now: datetime,
                   notes: list[str]) -> list[RetentionDecision]:
    order = _Order(records)
    records = sorted(records, key=order.key)
    anchors = [r for r in records if r.kind == "full" and is_restore_base(_head(r))]
    if not policy.enabled:
        return [_decide(r, True, NO_POLICY) for r in records]
    if not anchors:
        notes.append(f"database {database} has no restorable full backup: none of its "
                     "backups is expired")
        return [_decide(r, True, "no restorable full backup of the database: nothing of it "
                                 "is expired") for r in records]

    keep = _kept_anchors(anchors, policy, now, order)
    kept = [a for a in anchors if a.id in keep]
    oldest = kept[0]
    anchor_ids = {a.id for a in anchors}
    decisions = []
    for record in records:
        if record.id in keep:
            decisions.append(_decide(record, True, keep[record.id]))
        elif record.id in anchor_ids:
            decisions.append(_decide(record, False, _why_delete(policy)))
        elif record.kind == "full":
            decisions.append(_copy_only(record, oldest, order))
        elif record.kind == "differential":
            decisions.append(_differential(record, anchors, kept, oldest, order))
        else:
            decisions.append(_log(record, kept, order))
    return decisions


def _kept_anchors(anchors: list[SqlServerBackupRecord], policy: RetentionConfig,
                  now: datetime, order: _Order) -> dict[str, str]:
    """Which chain anchors the policy keeps, each with the first reason that keeps it."""
    keep: dict[str, str] = {anchors[-1].id: "newest full (the newest full chain is always kept)"}
    if policy.full_count is not None:
        for anchor in anchors[-policy.full_count:]:
            keep.setdefault(anchor.id, f"within the newest {policy.full_count} full chains")
    if policy.window_days is not None:
        days = f"{policy.window_days:g}-day"
        start = now - timedelta(days=policy.window_days)
        # Every point after ``start`` must stay restorable: the newest full finished at
        # or before it, and everything after that full.
        before = [a for a in anchors if (f := _finish(a)) is not None and f <= start]
        base = before[-1] if before else None
        for anchor in anchors:
            finished = _finish(anchor)
            if finished is None:
                keep.setdefault(anchor.id, "its finish time is unknown (msdb time_zone 127): "
                                           "kept to be safe")
            elif anchor is base:
                keep.setdefault(anchor.id, f"newest full finished before the {days} window "
                                           f"began ({_utc(start)}): restores to the window's "
                                           "start need it")
            elif base is None or order.key(anchor) > order.key(base):
                keep.setdefault(anchor.id, f"within the {days} window")
    return keep


def _copy_only(record: SqlServerBackupRecord, oldest: SqlServerBackupRecord,
               order: _Order) -> RetentionDecision:
    what = "copy-only full" if _head(record).is_copy_only else "full not written to disk files"
    if order.key(record) > order.key(oldest):
        return _decide(record, True, f"{what}, newer than the oldest kept full {oldest.id}")
    return _decide(record, False, f"{what} older than the oldest kept full {oldest.id} "
                                  "(it anchors no chain)")


def _differential(record: SqlServerBackupRecord, anchors: list[SqlServerBackupRecord],
                  kept: list[SqlServerBackupRecord], oldest: SqlServerBackupRecord,
                  order: _Order) -> RetentionDecision:
    base = next((a for a in anchors if is_differential_of(_head(record), _head(a))), None)
    if base is not None:
        if any(a.id == base.id for a in kept):
            return _decide(record, True, f"differential of kept full {base.id}")
        return _decide(record, False, f"differential of expired full {base.id}")
    if order.key(record) > order.key(oldest):
        return _decide(record, True, "its base full is not in the repository; kept while "
                                     f"newer than the oldest kept full {oldest.id}")
    return _decide(record, False, "its base full is not in the repository and it is older "
                                  f"than the oldest kept full {oldest.id}")


def _log(record: SqlServerBackupRecord, kept: list[SqlServerBackupRecord],
         order: _Order) -> RetentionDecision:
    fork = order.fork(record)
    last = _head(record).last_lsn
    in_fork = [a for a in kept if order.fork(a) == fork]
    earlier_fork = [a for a in kept if order.fork(a) < fork]
    if in_fork and last > _head(in_fork[0]).last_lsn:
        anchor = [a for a in in_fork if _head(a).last_lsn < last][-1]
        return _decide(record, True, f"log needed from kept full {anchor.id}")
    if earlier_fork:
        # The planner restores one fork at a time, but SQL Server itself can restore a
        # full of an earlier fork and roll through the fork point: keep what that needs.
        return _decide(record, True, f"recovery fork {_head(record).recovery_fork_guid} began "
                                     f"after kept full {earlier_fork[-1].id}; a restore from "
                                     "it across the fork may need this log")
    if in_fork:
        return _decide(record, False, f"older than kept full {in_fork[0].id} (ends at or "
                                      f"before its last LSN {_head(in_fork[0]).last_lsn})")
    return _decide(record, False, f"log of recovery fork {_head(record).recovery_fork_guid}, "
                                  "which has no kept full; the kept fulls are in later forks")


def _decide(record: SqlServerBackupRecord, keep: bool, reason: str) -> RetentionDecision:
    return RetentionDecision(backup_id=record.id, database=record.database, kind=record.kind,
                             backup_set_id=record.backup_set_id, keep=keep, reason=reason)


def _why_delete(policy: RetentionConfig) -> str:
    parts = []
    if policy.full_count is not None:
        parts.append(f"older than the newest {policy.full_count} full chains")
    if policy.window_days is not None:
        parts.append(f"not needed for the {policy.window_days:g}-day window")
    return " and ".join(parts)


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
