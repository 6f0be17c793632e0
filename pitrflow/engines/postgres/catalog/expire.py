"""Carry out an expire plan so that an interruption never leaves a false backup.

For each backup: an `expiring.json` marker first (readers then reject the
backup even while its manifest still exists), then the manifest, then the
other objects, then the marker.  A run interrupted anywhere leaves either a
valid backup or one the catalog reports as "expiring", which the next expire
finishes deleting.

Under S3 Object Lock (features.object_lock) a backup is deleted only once none
of its objects is locked any more; until then it stays whole and valid, and the
result says when it goes (the first expire after its lock lapses).  No marker is
written there, since the marker itself would be locked for the whole lock period:
the manifest goes first instead, so an interrupted run leaves objects without a
manifest, which no reader accepts and cleanup removes.  WAL and marks are deleted
oldest first up to the first one still locked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pitrflow.engines.postgres.catalog.retention import ExpirePlan
from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.errors import ObjectLockedError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import EXPIRING_NAME, MANIFEST_NAME, backup_object, verify_key
from pitrflow.storage.locking import still_locked

log = logging.getLogger("pitrflow.expire")


@dataclass
class ExpireResult:
    backups_deleted: list[str] = field(default_factory=list)
    wal_deleted: int = 0
    marks_deleted: int = 0
    baselines_deleted: int = 0
    bytes_freed: int = 0
    # What the plan deletes but Object Lock still protects: (what, when the lock lapses).
    locked: list[tuple[str, datetime | None]] = field(default_factory=list)


def _delete_backup(repo: Repository, catalog: Catalog, backup_id: str) -> int:
    instance = catalog.instance
    keys = sorted(catalog.backup_object_keys.get(backup_id, []))
    marker = backup_object(instance, backup_id, EXPIRING_NAME)
    manifest = backup_object(instance, backup_id, MANIFEST_NAME)
    locking = repo.features.object_lock
    if marker not in keys and not locking:
        repo.put_bytes(marker, json.dumps({"expiring": backup_id}).encode())
    if manifest in keys:
        repo.delete(manifest)
    freed = 0
    sizes = {i.key: i.size for i in repo.list(f"{instance}/backups/{backup_id}/")}
    for key in keys:
        if key not in (marker, manifest):
            repo.delete(key)
            freed += sizes.get(key, 0)
    try:
        repo.delete(verify_key(instance, backup_id))
    except ObjectLockedError as exc:  # written after the backup, so locked longer
        log.warning("the verify record of %s stays until %s (Object Lock)", backup_id,
                    exc.until)
    if marker in keys or not locking:
        repo.delete(marker)
    return freed


def _delete_oldest_first(repo: Repository, entries: Sequence[Any],
                         name: Callable[[Any], str], result: ExpireResult) -> tuple[int, int]:
    """Delete entries oldest first; the first one Object Lock still protects ends the run
    (newer ones are locked longer still) and is reported with its date.  Returns how many
    were deleted and the bytes freed."""
    deleted = freed = 0
    for entry in entries:
        try:
            repo.delete(entry.key)
        except ObjectLockedError as exc:
            result.locked.append((name(entry), exc.until))
            break
        deleted += 1
        freed += getattr(entry, "size", 0)
    return deleted, freed


def execute_expire(repo: Repository, catalog: Catalog, plan: ExpirePlan) -> ExpireResult:
    result = ExpireResult()
    for backup_id in [*plan.finish_expiring, *plan.delete_backups]:
        until = still_locked(repo, catalog.backup_object_keys.get(backup_id, []))
        if until is not None:
            log.info("backup %s is locked until %s: it is deleted by the first expire after that",
                     backup_id, until.isoformat())
            result.locked.append((f"backup {backup_id}", until))
            continue
        log.info("expiring backup %s", backup_id)
        try:
            result.bytes_freed += _delete_backup(repo, catalog, backup_id)
        except ObjectLockedError as exc:
            result.locked.append((f"backup {backup_id}", exc.until))
            continue
        result.backups_deleted.append(backup_id)
    result.wal_deleted, freed = _delete_oldest_first(
        repo, plan.delete_wal, lambda e: f"WAL from {e.segment}", result)
    result.bytes_freed += freed
    _, freed = _delete_oldest_first(repo, plan.delete_partials,
                                    lambda p: f"partial segment {p.segment}", result)
    result.bytes_freed += freed
    result.marks_deleted, _ = _delete_oldest_first(
        repo, plan.delete_marks, lambda m: f"ship marks from {m.key.rsplit('/', 1)[-1]}",
        result)
    result.baselines_deleted, _ = _delete_oldest_first(
        repo, plan.delete_baselines, lambda b: f"drill baselines from {b.key.rsplit('/', 1)[-1]}",
        result)
    _delete_oldest_first(repo, plan.delete_restore_points,
                         lambda p: f"restore point {p.name!r}", result)
    return result
