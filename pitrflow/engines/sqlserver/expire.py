"""Carry out a SQL Server expire plan so that an interruption never leaves a false backup.

Per backup set, as for PostgreSQL (``engines.postgres.catalog.expire``): an ``expiring.json``
marker first (the catalog then rejects the set even while its manifest exists), then
the manifest, then the files, then its verify record, then the marker.  A run
interrupted anywhere leaves either a valid backup or one the catalog reports as
expiring, which the next expire finishes.  The marker is what tells a half-expired
set from a backup still being written, which also has files and no manifest yet and
must not be touched.

Fulls go first, then differentials, then logs: an interrupted run may leave old logs
no full can use (harmless, the next run deletes them), never a full whose logs are
already gone (a backup that looks restorable to points it cannot reach).

Under S3 Object Lock a set still locked is left whole and reported with the date its
lock lapses; no marker is written there (it would be locked itself), so the manifest
goes first, as in engines.postgres.catalog.expire.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from pitrflow.engines.sqlserver.catalog import SqlServerCatalog
from pitrflow.engines.sqlserver.record import record_prefix
from pitrflow.engines.sqlserver.retention import SqlServerExpirePlan
from pitrflow.errors import ObjectLockedError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import EXPIRING_NAME, MANIFEST_NAME, verify_key
from pitrflow.storage.locking import still_locked

log = logging.getLogger("pitrflow.sqlserver.expire")

_KIND_ORDER = {"full": 0, "differential": 1, "log": 2}


@dataclass
class SqlServerExpireResult:
    """What a run deleted: backup ids (interrupted ones first), log count, bytes."""

    backups_deleted: list[str] = field(default_factory=list)
    logs_deleted: int = 0
    bytes_freed: int = 0
    # Sets the plan deletes but Object Lock still protects: (what, when the lock lapses).
    locked: list[tuple[str, datetime | None]] = field(default_factory=list)


def delete_backup_set(repo: Repository, instance: str, backup_id: str, prefix: str) -> int:
    """Marker, manifest, files, verify record, marker; returns the bytes freed.

    Safe to run again on a set it already half deleted: every step tolerates what an
    earlier run already removed.
    """
    marker = prefix + EXPIRING_NAME
    manifest = prefix + MANIFEST_NAME
    objects = {info.key: info.size for info in repo.list(prefix)}
    locking = repo.features.object_lock
    if marker not in objects and not locking:
        repo.put_bytes(marker, json.dumps({"expiring": backup_id}).encode())
    if manifest in objects:
        repo.delete(manifest)
    freed = 0
    for key, size in sorted(objects.items()):
        if key not in (marker, manifest):
            repo.delete(key)
            freed += size
    try:
        repo.delete(verify_key(instance, backup_id))
    except ObjectLockedError as exc:  # written after the set, so locked longer
        log.warning("the verify record of %s stays until %s (Object Lock)", backup_id,
                    exc.until)
    if marker in objects or not locking:
        repo.delete(marker)
    return freed


def _delete_unless_locked(repo: Repository, instance: str, backup_id: str, prefix: str,
                          result: SqlServerExpireResult) -> bool:
    until = still_locked(repo, [info.key for info in repo.list(prefix)])
    if until is None:
        try:
            result.bytes_freed += delete_backup_set(repo, instance, backup_id, prefix)
            result.backups_deleted.append(backup_id)
            return True
        except ObjectLockedError as exc:
            until = exc.until
    log.info("backup set %s is locked until %s: the first expire after that deletes it",
             backup_id, until)
    result.locked.append((f"backup {backup_id}", until))
    return False


def execute_sqlserver_expire(repo: Repository, catalog: SqlServerCatalog,
                             plan: SqlServerExpirePlan) -> SqlServerExpireResult:
    """Finish interrupted expires, then delete what the plan deletes, in a safe order."""
    result = SqlServerExpireResult()
    for backup_id in plan.finish_expiring:
        log.info("finishing the interrupted expire of %s", backup_id)
        _delete_unless_locked(repo, catalog.instance, backup_id, catalog.expiring[backup_id],
                              result)
    by_id = {record.id: record for record in catalog.records}
    doomed = sorted((by_id[d.backup_id] for d in plan.decisions if not d.keep),
                    key=lambda r: (_KIND_ORDER[r.kind], r.backup_set_id))
    for record in doomed:
        log.info("expiring %s backup %s of %s (backup set %s)", record.kind, record.id,
                 record.database, record.backup_set_id)
        deleted = _delete_unless_locked(repo, catalog.instance, record.id,
                                        record_prefix(catalog.instance, record.kind, record.id),
                                        result)
        if deleted and record.kind == "log":
            result.logs_deleted += 1
    return result
