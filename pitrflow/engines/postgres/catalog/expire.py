"""Carry out an expire plan so that an interruption never leaves a false backup.

For each backup: an `expiring.json` marker first (readers then reject the
backup even while its manifest still exists), then the manifest, then the
other objects, then the marker.  A run interrupted anywhere leaves either a
valid backup or one the catalog reports as "expiring", which the next expire
finishes deleting.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from pitrflow.engines.postgres.catalog.retention import ExpirePlan
from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import EXPIRING_NAME, MANIFEST_NAME, backup_object, verify_key

log = logging.getLogger("pitrflow.expire")


@dataclass
class ExpireResult:
    backups_deleted: list[str] = field(default_factory=list)
    wal_deleted: int = 0
    marks_deleted: int = 0
    baselines_deleted: int = 0
    bytes_freed: int = 0


def _delete_backup(repo: Repository, catalog: Catalog, backup_id: str) -> int:
    instance = catalog.instance
    keys = sorted(catalog.backup_object_keys.get(backup_id, []))
    marker = backup_object(instance, backup_id, EXPIRING_NAME)
    manifest = backup_object(instance, backup_id, MANIFEST_NAME)
    if marker not in keys:
        repo.put_bytes(marker, json.dumps({"expiring": backup_id}).encode())
    if manifest in keys:
        repo.delete(manifest)
    freed = 0
    sizes = {i.key: i.size for i in repo.list(f"{instance}/backups/{backup_id}/")}
    for key in keys:
        if key not in (marker, manifest):
            repo.delete(key)
            freed += sizes.get(key, 0)
    repo.delete(verify_key(instance, backup_id))
    repo.delete(marker)
    return freed


def execute_expire(repo: Repository, catalog: Catalog, plan: ExpirePlan) -> ExpireResult:
    result = ExpireResult()
    for backup_id in [*plan.finish_expiring, *plan.delete_backups]:
        log.info("expiring backup %s", backup_id)
        result.bytes_freed += _delete_backup(repo, catalog, backup_id)
        result.backups_deleted.append(backup_id)
    for entry in plan.delete_wal:
        repo.delete(entry.key)
        result.bytes_freed += entry.size
        result.wal_deleted += 1
    for partial in plan.delete_partials:
        repo.delete(partial.key)
        result.bytes_freed += partial.size
    for mark in plan.delete_marks:
        repo.delete(mark.key)
        result.marks_deleted += 1
    for baseline in plan.delete_baselines:
        repo.delete(baseline.key)
        result.baselines_deleted += 1
    for point in plan.delete_restore_points:
        repo.delete(point.key)
    return result
