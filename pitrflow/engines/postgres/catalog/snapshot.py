"""A snapshot of one instance's repository contents, read in one listing.

The repository is the only catalog: no side database can disagree with it.
A backup directory without a valid manifest, or whose manifest names an
object that is missing or has the wrong size, is not a backup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pitrflow.engines.postgres.catalog.manifest import (
    BackupManifest,
    Mark,
    load_manifest,
    load_mark,
)
from pitrflow.engines.postgres.wal.walnames import (
    DEFAULT_SEGMENT_SIZE,
    TimelineSwitch,
    parse_history,
    parse_segment_name,
)
from pitrflow.errors import RepositoryError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import (
    EXPIRING_NAME,
    MANIFEST_NAME,
    BackupObjectEntry,
    BaselineEntry,
    HistoryEntry,
    MarkEntry,
    PartialEntry,
    RestorePointEntry,
    WalEntry,
    catalog_prefixes,
    parse_key,
)

EXPIRING_REASON = "expired by retention; deletion not finished (the next expire finishes it)"


@dataclass
class Catalog:
    instance: str
    backups: list[BackupManifest] = field(default_factory=list)
    # id -> why it is not usable (no manifest yet, damaged manifest, missing object)
    rejected: dict[str, str] = field(default_factory=dict)
    wal: dict[int, dict[int, WalEntry]] = field(default_factory=dict)
    histories: dict[int, list[TimelineSwitch]] = field(default_factory=dict)
    history_entries: dict[int, HistoryEntry] = field(default_factory=dict)
    marks: list[MarkEntry] = field(default_factory=list)
    # The drill's baselines, one per mark or backup they were read after.
    baselines: list[BaselineEntry] = field(default_factory=list)
    # Follow mode's uploads of the segment in progress (never whole segments).
    partials: list[PartialEntry] = field(default_factory=list)
    restore_points: list[RestorePointEntry] = field(default_factory=list)
    segment_size: int = DEFAULT_SEGMENT_SIZE
    object_keys: set[str] = field(default_factory=set)
    expiring: set[str] = field(default_factory=set)
    backup_object_keys: dict[str, list[str]] = field(default_factory=dict)

    def restore_point(self, name: str) -> RestorePointEntry | None:
        return next((p for p in self.restore_points if p.name == name), None)

    def backup(self, backup_id: str) -> BackupManifest | None:
        return next((b for b in self.backups if b.id == backup_id), None)

    @property
    def newest_mark(self) -> MarkEntry | None:
        return self.marks[-1] if self.marks else None

    def wal_entries(self) -> list[WalEntry]:
        return [e for tli in sorted(self.wal) for _, e in sorted(self.wal[tli].items())]

    def partial_for(self, timeline: int, segno: int) -> PartialEntry | None:
        """The partial of that segment reaching furthest, unless the whole segment is stored."""
        if segno in self.wal.get(timeline, {}):
            return None
        found = [p for p in self.partials if p.timeline == timeline
                 and parse_segment_name(p.segment, self.segment_size)[1] == segno]
        return max(found, key=lambda p: (p.end_lsn, p.time), default=None)

    def superseded_partials(self) -> list[PartialEntry]:
        """Partials a later upload made useless: the whole segment, or a longer partial."""
        keep: dict[tuple[int, int], PartialEntry] = {}
        for p in self.partials:
            segno = parse_segment_name(p.segment, self.segment_size)[1]
            best = self.partial_for(p.timeline, segno)
            if best is not None:
                keep[(p.timeline, segno)] = best
        return [p for p in self.partials if p not in keep.values()]

    def newest_backup_on(self, timeline: int | None = None) -> BackupManifest | None:
        candidates = [b for b in self.backups if timeline is None or b.timeline == timeline]
        return max(candidates, key=lambda b: (b.stop_lsn, b.stop_time), default=None)


def read_catalog(repo: Repository, instance: str, marks: bool = True) -> Catalog:
    """The instance's backups, WAL, histories and marks as the repository holds them.

    Only the catalog's own prefixes are listed, never the drills' evidence or the
    verify records, which grow with every night.  A ship passes `marks=False`: it
    writes a mark but reads none, and marks are the longest listing of all (one per
    ship run), so its catalog has no marks.
    """
    catalog = Catalog(instance=instance)
    backup_objects: dict[str, dict[str, int]] = {}
    wal_entries: list[WalEntry] = []
    listed = (info for prefix in catalog_prefixes(instance, marks) for info in repo.list(prefix))
    for info in listed:
        catalog.object_keys.add(info.key)
        parsed = parse_key(instance, info.key, info.size)
        if isinstance(parsed, WalEntry):
            wal_entries.append(parsed)
        elif isinstance(parsed, HistoryEntry):
            catalog.history_entries[parsed.timeline] = parsed
        elif isinstance(parsed, MarkEntry):
            catalog.marks.append(parsed)
        elif isinstance(parsed, BaselineEntry):
            catalog.baselines.append(parsed)
        elif isinstance(parsed, PartialEntry):
            catalog.partials.append(parsed)
        elif isinstance(parsed, RestorePointEntry):
            catalog.restore_points.append(parsed)
        elif isinstance(parsed, BackupObjectEntry):
            backup_objects.setdefault(parsed.backup_id, {})[parsed.name] = parsed.size
            catalog.backup_object_keys.setdefault(parsed.backup_id, []).append(parsed.key)

    for backup_id, objects in sorted(backup_objects.items()):
        if EXPIRING_NAME in objects:
            catalog.rejected[backup_id] = EXPIRING_REASON
            catalog.expiring.add(backup_id)
            continue
        if MANIFEST_NAME not in objects:
            catalog.rejected[backup_id] = "no manifest (incomplete or interrupted backup)"
            continue
        key = f"{instance}/backups/{backup_id}/{MANIFEST_NAME}"
        try:
            manifest = load_manifest(repo.get_bytes(key), key)
        except RepositoryError as exc:
            catalog.rejected[backup_id] = exc.message
            continue
        problem = next(
            (f"object {f.name} is missing" if f.name not in objects
             else f"object {f.name} has {objects[f.name]} bytes, manifest says {f.size}"
             for f in manifest.files if objects.get(f.name) != f.size),
            None,
        )
        if problem:
            catalog.rejected[backup_id] = problem
            continue
        catalog.backups.append(manifest)
    catalog.backups.sort(key=lambda b: (b.stop_lsn, b.stop_time))
    if catalog.backups:
        catalog.segment_size = catalog.backups[-1].segment_size

    for entry in wal_entries:
        _, segno = parse_segment_name(entry.segment, catalog.segment_size)
        catalog.wal.setdefault(entry.timeline, {})[segno] = entry
    for tli, entry in catalog.history_entries.items():
        catalog.histories[tli] = parse_history(repo.get_bytes(entry.key).decode())
    catalog.marks.sort(key=lambda m: (m.time, m.lsn))
    catalog.baselines.sort(key=lambda b: (b.time, b.lsn))
    catalog.restore_points.sort(key=lambda p: (p.time, p.lsn))
    return catalog


def read_mark(repo: Repository, entry: MarkEntry) -> Mark:
    return load_mark(repo.get_bytes(entry.key), entry.key)


def newest_mark_time(catalog: Catalog) -> datetime | None:
    return catalog.newest_mark.time if catalog.newest_mark else None
