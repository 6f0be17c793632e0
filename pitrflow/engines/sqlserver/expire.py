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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from pitrflow.engines.sqlserver.catalog import SqlServerCatalog
from pitrflow.engines.sqlserver.record import record_prefix
from pitrflow.engines.sqlserver.retention import SqlServerExpirePlan
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import EXPIRING_NAME, MANIFEST_NAME, verify_key

log = logging.getLogger("pitrflow.sqlserver.expire")

_KIND_ORDER = {"full": 0, "differential": 1, "log": 2}


@dataclass
class SqlServerExpireResult:
    """What a run deleted: backup ids (interrupted ones first), log count, bytes."""

    backups_deleted: list[str] = field(default_factory=list)
    logs_deleted: int = 0
    bytes_freed: int = 0


def delete_backup_set(repo: Repository, instance: str, backup_id: str, prefix: str) -> int:
    """Marker, manifest, files, verify record, marker; returns the bytes freed.

    Safe to run again on a set it already half deleted: every step tolerates what an
    earlier run already removed.
    """
    marker = prefix + EXPIRING_NAME
    manifest = prefix + MANIFEST_NAME
    objects = {info.key: info.size for info in repo.list(prefix)}
    if marker not in objects:
        repo.put_bytes(marker, json.dumps({"expiring": backup_id}).encode())
    if manifest in objects:
        repo.delete(manifest)
    freed = 0
    for key, size in sorted(objects.items()):
        if key not in (marker, manifest):
            repo.delete(key)
            freed += size
    repo.delete(verify_key(instance, backup_id))
    repo.delete(marker)
    return freed


def execute_sqlserver_expire(repo: Repository, catalog: SqlServerCatalog,
                             plan: SqlServerExpirePlan) -> SqlServerExpireResult:
    """Finish interrupted expires, then delete what the plan deletes, in a safe order."""
    result = SqlServerExpireResult()
    for backup_id in plan.finish_expiring:
        log.info("finishing the interrupted expire of %s", backup_id)
        result.bytes_freed += delete_backup_set(repo, catalog.instance, backup_id,
                                                catalog.expiring[backup_id])
        result.backups_deleted.append(backup_id)
    by_id = {record.id: record for record in catalog.records}
    doomed = sorted((by_id[d.backup_id] for d in plan.decisions if not d.keep),
                    key=lambda r: (_KIND_ORDER[r.kind], r.backup_set_id))
    for record in doomed:
        log.info("expiring %s backup %s of %s (backup set %s)", record.kind, record.id,
                 record.database, record.backup_set_id)
        result.bytes_freed += delete_backup_set(
            repo, catalog.instance, record.id,
            record_prefix(catalog.instance, record.kind, record.id))
        result.backups_deleted.append(record.id)
        if record.kind == "log":
            result.logs_deleted += 1
    return result
