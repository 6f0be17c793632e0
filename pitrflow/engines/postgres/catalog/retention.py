"""Retention: a pure plan of what to delete and why, and what is kept and why.

The plan never deletes the newest full chain, a backup that a kept
incremental depends on, WAL from the start of the oldest kept backup onward,
timeline history files, or anything of a backup still being written (no
manifest yet: that is cleanup's business, not retention's).  Backups are
ordered by their recorded LSNs and times, never by name.  A drill baseline
goes exactly when the mark (or backup) it is named after does: its key holds
that mark's time and LSN, and one rule decides for both, so a baseline lives
as long as the WAL it lets a drill judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pitrflow.config import RetentionConfig
from pitrflow.engines.postgres.catalog.manifest import BackupManifest
from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.engines.postgres.wal.walnames import parse_segment_name
from pitrflow.storage.layout import (
    BaselineEntry,
    MarkEntry,
    PartialEntry,
    RestorePointEntry,
    WalEntry,
)


@dataclass(frozen=True)
class Decision:
    backup_id: str
    keep: bool
    reason: str


@dataclass
class ExpirePlan:
    instance: str
    decisions: list[Decision] = field(default_factory=list)
    delete_wal: list[WalEntry] = field(default_factory=list)
    delete_marks: list[MarkEntry] = field(default_factory=list)
    delete_baselines: list[BaselineEntry] = field(default_factory=list)
    # Follow mode's partial segments: older than the kept WAL, or replaced by a whole segment.
    delete_partials: list[PartialEntry] = field(default_factory=list)
    # Named points no kept backup can reach any more go with the WAL they were in.
    delete_restore_points: list[RestorePointEntry] = field(default_factory=list)
    finish_expiring: list[str] = field(default_factory=list)
    wal_kept_from: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def delete_backups(self) -> list[str]:
        return [d.backup_id for d in self.decisions if not d.keep]

    @property
    def kept_backups(self) -> list[str]:
        return [d.backup_id for d in self.decisions if d.keep]

    @property
    def empty(self) -> bool:
        return not (self.delete_backups or self.delete_wal or self.delete_marks
                    or self.delete_baselines or self.delete_partials
                    or self.delete_restore_points or self.finish_expiring)


def _order(backups: list[BackupManifest]) -> list[BackupManifest]:
    return sorted(backups, key=lambda b: (b.stop_lsn, b.stop_time))


def _ancestors(backup: BackupManifest, by_id: dict[str, BackupManifest]) -> list[str]:
    found = []
    current = backup
    while current.parent is not None and current.parent in by_id:
        found.append(current.parent)
        current = by_id[current.parent]
    return found


def _full_of(backup: BackupManifest, by_id: dict[str, BackupManifest]) -> str:
    chain = _ancestors(backup, by_id)
    return chain[-1] if chain else backup.id


def plan_expire(catalog: Catalog, policy: RetentionConfig, now: datetime) -> ExpirePlan:
    plan = ExpirePlan(instance=catalog.instance, finish_expiring=sorted(catalog.expiring))
    backups = _order(catalog.backups)
    if not backups:
        plan.notes.append("no complete backups: nothing to expire")
        return plan
    by_id = {b.id: b for b in backups}
    keep: dict[str, str] = {}

    fulls = [b for b in backups if b.type == "full"]
    if fulls:
        newest_full = fulls[-1]
        for b in backups:
            if _full_of(b, by_id) == newest_full.id:
                keep.setdefault(b.id, "the newest full chain is always kept")
    if not policy.enabled:
        for b in backups:
            keep.setdefault(b.id, "no retention policy is configured")
    if policy.full_count is not None:
        kept_fulls = {f.id for f in fulls[-policy.full_count:]}
        for b in backups:
            if _full_of(b, by_id) in kept_fulls:
                keep.setdefault(b.id, f"within the newest {policy.full_count} full chains")
    if policy.window_days is not None:
        window_start = now - timedelta(days=policy.window_days)
        # Every point after window_start must stay restorable: keep the newest
        # backup consistent at or before it, and everything after it.
        anchor = next((b for b in reversed(backups) if b.stop_time <= window_start), None)
        for b in backups:
            if anchor is None or (b.stop_lsn, b.stop_time) >= (anchor.stop_lsn, anchor.stop_time):
                keep.setdefault(b.id, f"needed for the {policy.window_days:g}-day recovery window")
    # A kept backup keeps its whole chain.
    for bid in list(keep):
        for parent in _ancestors(by_id[bid], by_id):
            keep.setdefault(parent, f"a kept incremental ({bid}) depends on it")
    for b in backups:
        if b.id in keep:
            plan.decisions.append(Decision(b.id, True, keep[b.id]))
        else:
            plan.decisions.append(Decision(b.id, False, _why_delete(policy)))

    kept = [by_id[bid] for bid in keep]
    oldest = min(kept, key=lambda b: (b.start_lsn, b.stop_time))
    size = catalog.segment_size
    first_needed = oldest.start_lsn // size
    plan.wal_kept_from = f"segment number {first_needed} (start of {oldest.id})"
    for entry in catalog.wal_entries():
        if parse_segment_name(entry.segment, size)[1] < first_needed:
            plan.delete_wal.append(entry)
    superseded = catalog.superseded_partials()
    plan.delete_partials = [p for p in catalog.partials if p in superseded
                            or parse_segment_name(p.segment, size)[1] < first_needed]
    plan.delete_marks = [m for m in catalog.marks if _before_window(m.time, m.lsn, oldest)]
    plan.delete_baselines = [b for b in catalog.baselines
                             if _before_window(b.time, b.lsn, oldest)]
    plan.delete_restore_points = [p for p in catalog.restore_points
                                  if p.lsn <= oldest.stop_lsn]
    return plan


def _before_window(time: datetime, lsn: int, oldest: BackupManifest) -> bool:
    """A mark (or the baseline named after it) no restore from a kept backup can reach."""
    return time < oldest.stop_time and lsn <= oldest.start_lsn


def _why_delete(policy: RetentionConfig) -> str:
    parts = []
    if policy.full_count is not None:
        parts.append(f"older than the newest {policy.full_count} full chains")
    if policy.window_days is not None:
        parts.append(f"not needed for the {policy.window_days:g}-day window")
    return " and ".join(parts)
