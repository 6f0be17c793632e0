"""The SQL Server catalog, read from the repository alone.

Each backup set's manifest gives back msdb's rows, so the pure planner runs on
the repository exactly as it runs on a live msdb, and a server that is gone
takes nothing with it.  A backup directory without a valid manifest, or whose
manifest names a file that is missing or has the wrong size, is rejected and
so cannot be planned from: a log missing that way shows up as a gap, named.
One holding an ``expiring.json`` marker is being deleted by retention and is
rejected even while its manifest is still there; the next expire finishes it.

``import_recorded_rows`` builds such a catalog from a recording of msdb rows
and marks (tests/unit/sqlserver/fixtures), with placeholder files, so the
planner, the dry run and the CLI can be shown without a SQL Server.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from pitrflow import __version__ as _pitrflow_version
from pitrflow.engines.sqlserver.errors import MsdbHistoryError, SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import (
    BackupSetRow,
    MarkRow,
    marks_from_json,
    row_times_utc,
    rows_from_json,
)
from pitrflow.engines.sqlserver.record import (
    SOURCE_RECORDED,
    RecordedFile,
    SqlServerBackupRecord,
    area,
    dump_backup_record,
    kind_of_type,
    load_backup_record,
    manifest_key,
    new_backup_id,
    object_name,
)
from pitrflow.errors import PitrError, RepositoryError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import EXPIRING_NAME, MANIFEST_NAME

EXPIRING_REASON = "expired by retention; deletion not finished (the next expire finishes it)"


@dataclass
class SqlServerCatalog:
    """Usable backup sets of one instance, and why the others are not usable.

    ``expiring`` maps the id of each backup an interrupted expire left behind to its
    key prefix, so the next expire can finish deleting it.
    """

    instance: str
    records: list[SqlServerBackupRecord] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    expiring: dict[str, str] = field(default_factory=dict)

    def rows(self, database: str | None = None) -> list[BackupSetRow]:
        """Every recorded msdb row, optionally of one database, for the planner."""
        return [row for record in self.records for row in record.rows
                if database is None or row.database_name == database]

    def marks(self, database: str) -> dict[int, tuple[MarkRow, ...]]:
        """The marked transactions stored with each usable log backup of ``database``,
        by the log backup's ``backup_set_id``."""
        return {record.backup_set_id: record.marks for record in self.records
                if record.database == database and record.marks}

    def databases(self) -> list[str]:
        return sorted({record.database for record in self.records})

    def record_for(self, backup_set_id: int) -> SqlServerBackupRecord | None:
        return next((r for r in self.records if r.backup_set_id == backup_set_id), None)


def read_sqlserver_catalog(repo: Repository, instance: str) -> SqlServerCatalog:
    """Every SQL Server backup of ``instance`` whose manifest and files check out."""
    catalog = SqlServerCatalog(instance=instance)
    objects: dict[tuple[str, str], dict[str, int]] = {}
    for where in ("backups", "logs"):
        prefix = f"{instance}/{where}/"
        for info in repo.list(prefix):
            rest = info.key[len(prefix):]
            backup_id, sep, name = rest.partition("/")
            if sep and name and "/" not in name:
                objects.setdefault((where, backup_id), {})[name] = info.size

    seen: dict[int, SqlServerBackupRecord] = {}
    for (where, backup_id), names in sorted(objects.items(), key=lambda item: item[0][1]):
        key = f"{instance}/{where}/{backup_id}/{MANIFEST_NAME}"
        if EXPIRING_NAME in names:
            catalog.rejected[backup_id] = EXPIRING_REASON
            catalog.expiring[backup_id] = f"{instance}/{where}/{backup_id}/"
            continue
        if MANIFEST_NAME not in names:
            catalog.rejected[backup_id] = "no manifest (incomplete or interrupted backup)"
            continue
        try:
            record = load_backup_record(repo.get_bytes(key), key)
        except PitrError as exc:
            catalog.rejected[backup_id] = exc.message
            continue
        reason = _problem(record, names, instance, backup_id, where)
        if reason:
            catalog.rejected[backup_id] = reason
            continue
        earlier = seen.get(record.backup_set_id)
        if earlier is not None:
            if earlier.rows[0].backup_set_uuid == record.rows[0].backup_set_uuid:
                catalog.rejected[backup_id] = f"same backup set as {earlier.id} (stored twice)"
                continue
            raise RepositoryError(
                f"backups {earlier.id} and {record.id} of instance {instance} both claim msdb "
                f"backup_set_id {record.backup_set_id} but are different backup sets",
                "msdb was rebuilt or the instance now points at another server; give the "
                "new server its own instance name",
            )
        seen[record.backup_set_id] = record
        catalog.records.append(record)
    return catalog


def _problem(record: SqlServerBackupRecord, names: dict[str, int], instance: str,
             backup_id: str, where: str) -> str | None:
    """Why a manifest cannot be trusted for planning, or None."""
    if record.instance != instance or record.id != backup_id:
        return f"manifest names instance {record.instance} backup {record.id}"
    if where != area(record.kind):
        return f"a {record.kind} backup stored under {where}/"
    set_ids = {row.backup_set_id for row in record.rows}
    if len(set_ids) != 1:
        return f"manifest mixes backup sets {sorted(set_ids)}"
    for row in record.rows:
        if row.mirror == 0 and record.file_for(row.physical_device_name) is None:
            return f"stripe {row.family_sequence_number} ({row.physical_device_name}) not stored"
    head = record.rows[0]
    for mark in record.marks:
        if record.kind != "log" or not head.first_lsn <= mark.lsn < head.last_lsn:
            return (f"mark {mark.mark_name!r} at LSN {mark.lsn} is outside the backup's LSN "
                    f"range {head.first_lsn}..{head.last_lsn}")
    for stored in record.files:
        size = names.get(stored.name)
        if size is None:
            return f"object {stored.name} is missing"
        if size != stored.size:
            return f"object {stored.name} has {size} bytes, its manifest says {stored.size}"
    return None


def require_database(catalog: SqlServerCatalog, database: str) -> list[BackupSetRow]:
    """The rows of ``database``, or a refusal saying what the repository does hold."""
    rows = catalog.rows(database)
    if rows:
        return rows
    held = ", ".join(catalog.databases()) or "no SQL Server backups"
    rejected = f"; {len(catalog.rejected)} rejected" if catalog.rejected else ""
    raise SqlServerPlanError(
        f"repository holds no backups of database {database} for instance {catalog.instance}",
        f"it holds: {held}{rejected}; take a full backup (pitr backup full "
        f"{catalog.instance}) or check the instance's database",
    )


def import_recorded_rows(
    source: str | os.PathLike[str] | Sequence[BackupSetRow],
    repo: Repository,
    instance: str,
    marks: Sequence[MarkRow] | None = None,
) -> list[str]:
    """Store a recording of msdb rows as repository backups; returns the backup ids.

    Each backup set becomes one manifest with the recorded rows, and each of its
    mirror-0 stripes a small placeholder object whose SHA-256 the manifest records.
    Stripes msdb did not record stay absent, so the planner refuses as it would on
    the server.  Placeholders are marked ``recorded-rows``: a real restore refuses them.
    Marked transactions (``marks``, or a recording file's ``"marks"``) are stored with
    each log backup that holds their LSN, as a real log backup stores them; a mark no
    recorded log backup holds is refused before anything is written.
    """
    if isinstance(source, str | os.PathLike):
        rows = rows_from_json(source)
        marks = marks_from_json(source) if marks is None else marks
    else:
        rows = list(source)
    marks = list(marks or [])
    if not rows:
        raise MsdbHistoryError("the msdb recording holds no rows",
                               "record BACKUP_HISTORY_SQL's rows for the database")
    held = marks_by_log(rows, marks)
    real = [r.id for r in read_sqlserver_catalog(repo, instance).records
            if r.source != SOURCE_RECORDED]
    if real:
        # Placeholders newer than a real backup would be planned from, and a restore would
        # then refuse them: planning-only rows must never share a catalog with real backups.
        raise SqlServerPlanError(
            f"instance {instance} already holds {len(real)} real backup(s), such as {real[0]}; "
            "recorded msdb rows are not imported beside them",
            "import into a scratch repository: a config whose [repository] path is empty")
    sets: dict[int, list[BackupSetRow]] = {}
    for row in rows:
        sets.setdefault(row.backup_set_id, []).append(row)
    written = []
    for set_id, set_rows in sorted(sets.items()):
        head = min(set_rows, key=lambda r: (r.mirror, r.family_sequence_number))
        kind = kind_of_type(head.type)
        try:
            finished = row_times_utc(head)[1]
        except SqlServerPlanError:
            finished = head.backup_finish_date.replace(tzinfo=UTC)
        backup_id = new_backup_id(kind, finished, f"-{set_id}")
        primary = sorted((r for r in set_rows if r.mirror == 0),
                         key=lambda r: r.family_sequence_number)
        names = _unique_names(primary)
        files = []
        for row, name in zip(primary, names, strict=True):
            data = (f"pitrflow placeholder for msdb backup set {set_id}, stripe "
                    f"{row.family_sequence_number}: {row.physical_device_name}\n").encode()
            info = repo.put_bytes(f"{instance}/{area(kind)}/{backup_id}/{name}", data)
            files.append(RecordedFile(name=name, size=info.size,
                                      sha256=info.sha256 or hashlib.sha256(data).hexdigest(),
                                      physical_device_name=row.physical_device_name,
                                      family_sequence_number=row.family_sequence_number))
        record = SqlServerBackupRecord(
            id=backup_id, instance=instance, kind=kind, database=head.database_name,
            rows=tuple(set_rows), files=tuple(files), source=SOURCE_RECORDED,
            tool_version=f"pitrflow {_pitrflow_version}", marks=held.get(set_id, ()),
        )
        repo.put_bytes(manifest_key(instance, kind, backup_id), dump_backup_record(record))
        written.append(backup_id)
    return written


def marks_by_log(rows: Sequence[BackupSetRow],
                 marks: Sequence[MarkRow]) -> dict[int, tuple[MarkRow, ...]]:
    """Each recorded log backup set's marks: those of its database whose LSN it holds,
    as a log backup taken on the server stores them (``backup.log_marks``)."""
    logs = {row.backup_set_id: row for row in rows if row.type == "L"}
    held: dict[int, list[MarkRow]] = {}
    for mark in marks:
        holders = [set_id for set_id, row in logs.items()
                   if row.database_name == mark.database_name
                   and row.first_lsn <= mark.lsn < row.last_lsn]
        if not holders:
            raise MsdbHistoryError(
                f"mark {mark.mark_name!r} of {mark.database_name} at LSN {mark.lsn} is in no "
                "recorded log backup",
                "record the log backup that holds it too, or leave the mark out")
        for set_id in holders:
            held.setdefault(set_id, []).append(mark)
    return {set_id: tuple(sorted(found, key=lambda m: m.lsn))
            for set_id, found in held.items()}


def _unique_names(rows: Sequence[BackupSetRow]) -> list[str]:
    """Object names for a set's stripes; prefixed by stripe number when base names clash."""
    names = [object_name(row.physical_device_name) for row in rows]
    if len(set(names)) == len(names):
        return names
    return [f"stripe{row.family_sequence_number}-{name}" for row, name in zip(rows, names,
                                                                                 strict=True)]


def recording_path(path: str | os.PathLike[str]) -> Path:
    """A recording file, refused early with a clear line when it is not there."""
    resolved = Path(path)
    if not resolved.is_file():
        raise SqlServerPlanError(f"msdb recording {resolved} does not exist",
                                 "pass the path of a JSON file of BACKUP_HISTORY_SQL rows")
    return resolved
