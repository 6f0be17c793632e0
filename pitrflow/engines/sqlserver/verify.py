"""``pitr verify`` for SQL Server: re-read what a restore would need, from the repository only.

For each backup set: every file, streamed back and checked against the size and
SHA-256 its manifest recorded.  For the newest full of each database (or the full
or differential asked for): the log chain from it to the newest log backup, decided
by the restore planner itself, so a gap verify reports is exactly a gap a restore
would refuse at, named by its LSNs.  No server is needed: msdb may be long gone.
Results are stored beside PostgreSQL's (``<instance>/verify/<id>.json``) so
``pitr check`` can report a failed verify.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pitrflow.catalog.verify_records import store_verify_result
from pitrflow.config import InstanceConfig
from pitrflow.engines.sqlserver.catalog import SqlServerCatalog, read_sqlserver_catalog
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.planner import is_differential_of, is_restore_base, plan_restore
from pitrflow.engines.sqlserver.record import SqlServerBackupRecord
from pitrflow.errors import PitrError, UsageError
from pitrflow.storage.base import CHUNK, HashingReader, Repository

log = logging.getLogger("pitrflow.sqlserver.verify")


@dataclass(frozen=True)
class ChainReport:
    """The log chain from one full (or differential) to the newest log backup."""

    database: str
    start: str | None
    ok: bool
    text: str
    logs: tuple[str, ...] = ()


@dataclass
class SqlServerVerifyResult:
    """One backup set's files, and the log chain when it starts one."""

    backup_id: str
    kind: str
    database: str
    verified_at: str
    problems: list[str] = field(default_factory=list)
    objects_checked: int = 0
    bytes_read: int = 0
    log_chain: str = "not checked"
    logs_in_chain: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        # ``kind`` is the sealed record's own field, so the backup's kind is ``type``
        # (as in pitr info).  ``wal_segments_checked`` keeps the key PostgreSQL's
        # results carry: here it counts the log backups of the chain checked.
        body = asdict(self)
        body["type"] = body.pop("kind")
        return {**body, "engine": "sqlserver", "ok": self.ok,
                "wal_segments_checked": self.logs_in_chain}


def log_chain_start(catalog: SqlServerCatalog, database: str) -> SqlServerBackupRecord | None:
    """The newest restorable full of the newest recovery fork (the fork of the newest
    backup set, as the planner chooses), or None when that fork has none."""
    records = [r for r in catalog.records if r.database == database]
    if not records:
        return None
    fork = max(records, key=lambda r: r.backup_set_id).rows[0].recovery_fork_guid
    fulls = [r for r in records if r.kind == "full" and is_restore_base(r.rows[0])
             and r.rows[0].recovery_fork_guid == fork]
    return max(fulls, key=lambda r: r.rows[0].last_lsn) if fulls else None


def log_chain(catalog: SqlServerCatalog, database: str,
              start: SqlServerBackupRecord | None = None) -> ChainReport:
    """Can the planner restore ``database`` to its newest log from ``start``?

    ``start`` defaults to ``log_chain_start``.  A differential start is planned from
    its base full, so the chain checked is the one after the differential.
    """
    records = [r for r in catalog.records if r.database == database]
    if not records:
        return ChainReport(database, None, False,
                           f"repository holds no backups of database {database}")
    if start is None:
        start = log_chain_start(catalog, database)
        if start is None:
            fork = max(records, key=lambda r: r.backup_set_id).rows[0].recovery_fork_guid
            return ChainReport(database, None, False,
                               f"no restorable full backup of {database} in its newest "
                               f"recovery fork {fork}: take a full backup (pitr backup full)")
    anchors = [start]
    if start.kind == "differential":
        base = next((r for r in records if r.kind == "full"
                     and is_differential_of(start.rows[0], r.rows[0])), None)
        if base is None:
            return ChainReport(database, start.id, False,
                               f"the base full of differential {start.id} is not in the "
                               "repository")
        anchors.insert(0, base)
    # Only the start and the logs: the planner then has no other full or differential
    # to prefer, so it checks the chain from exactly this backup.
    rows = [row for r in anchors for row in r.rows]
    rows += [row for r in records if r.kind == "log" for row in r.rows]
    try:
        plan = plan_restore(rows, None, recovery_fork=start.rows[0].recovery_fork_guid)
    except SqlServerPlanError as exc:
        return ChainReport(database, start.id, False, f"log chain from {start.id}: {exc.message}")
    if not plan.logs:
        return ChainReport(database, start.id, True, f"no log backup after {start.id}")
    by_set = {r.backup_set_id: r.id for r in records}
    return ChainReport(database, start.id, True,
                       f"log chain ok from {start.id}: {len(plan.logs)} log backups to LSN "
                       f"{plan.logs[-1].last_lsn}",
                       tuple(by_set[step.backup_set_id] for step in plan.logs))


def verify_sqlserver(instance: InstanceConfig, repo: Repository,
                     backup_id: str | None = None) -> list[SqlServerVerifyResult]:
    """Every backup set of the instance (or one), and each database's newest chain."""
    catalog = read_sqlserver_catalog(repo, instance.name)
    chosen = catalog.records
    if backup_id is not None:
        found = next((r for r in catalog.records if r.id == backup_id), None)
        if found is None:
            why = catalog.rejected.get(backup_id, "it is not in the repository")
            raise UsageError(f"backup {backup_id} of {instance.name} cannot be verified: {why}",
                             f"pitr info {instance.name} lists the backups")
        chosen = [found]
    results = {record.id: _verify_files(repo, record) for record in chosen}
    if backup_id is None:
        for database in catalog.databases():
            chain = log_chain(catalog, database)
            # A chain without a start (no full in the newest fork) is reported on the
            # database's newest backup set, which is in that fork.
            holder = chain.start or max((r for r in chosen if r.database == database),
                                        key=lambda r: r.backup_set_id).id
            _attach(results[holder], chain)
    elif chosen[0].kind != "log":
        _attach(results[chosen[0].id], log_chain(catalog, chosen[0].database, chosen[0]))
    for result in results.values():
        store_verify_result(repo, instance.name, result.backup_id, result.to_dict())
    return list(results.values())


def _attach(result: SqlServerVerifyResult, chain: ChainReport) -> None:
    result.log_chain = chain.text
    result.logs_in_chain = len(chain.logs)
    if not chain.ok:
        result.problems.append(chain.text)


def _verify_files(repo: Repository, record: SqlServerBackupRecord) -> SqlServerVerifyResult:
    result = SqlServerVerifyResult(record.id, record.kind, record.database,
                                   datetime.now(UTC).isoformat())
    for stored in record.files:
        key = record.key(stored.name)
        try:
            reader = HashingReader(repo.open_reader(key), key)
            try:
                while reader.read(CHUNK):
                    pass
            finally:
                reader.close()
            reader.verify(stored.sha256, stored.size)
        except PitrError as exc:
            result.problems.append(f"{record.kind} backup {record.id}: {exc.message}")
        result.objects_checked += 1
        result.bytes_read += stored.size
    return result
