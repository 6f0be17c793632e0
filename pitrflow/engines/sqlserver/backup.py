"""Full, differential and log backups of one SQL Server database into the repository.

The server writes the backup file itself, into ``backup_dir_server``; the worker
reads the same file at ``backup_dir_worker``.  After BACKUP returns, the backup set's
rows (and, for a log backup, the marked transactions it holds) are read from msdb,
the file is hashed as the worker sees it, copied into the repository and checked
against that hash, and only then is the manifest written: a backup without one is
not a backup.  The server's copy is removed afterwards; the
repository is the only copy pitrflow relies on.

With ``backup_dir_server = "s3://HOST/BUCKET/PREFIX"`` (SQL Server 2022+, BACKUP TO
URL) the server writes straight to the object the repository keeps, striped over
``url_stripes`` URLs; the worker reads each object back for its SHA-256 and seals
the manifest.  A failed BACKUP leaves no object of ours behind.

After each backup the drill's baseline of the source is stored beside its manifest
(``engines.sqlserver.baseline``); a baseline that cannot be read only logs a warning.

Refusals come before anything is written: a database that is missing or not
online, a log backup of a database in SIMPLE recovery (it has no log chain), a
differential whose base full is not in the repository (it could never be
restored from here; with ``incremental_fallback`` a full is taken instead).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pitrflow import __version__ as _pitrflow_version
from pitrflow.config import InstanceConfig
from pitrflow.engines.sqlserver.baseline import record_sqlserver_baseline
from pitrflow.engines.sqlserver.catalog import SqlServerCatalog, read_sqlserver_catalog
from pitrflow.engines.sqlserver.connection import SqlExecutor, open_session
from pitrflow.engines.sqlserver.msdb import (
    BACKUP_HISTORY_SQL,
    LOG_MARKS_SQL,
    BackupSetRow,
    MarkRow,
    mark_from_mapping,
    row_from_mapping,
)
from pitrflow.engines.sqlserver.paths import server_join
from pitrflow.engines.sqlserver.record import (
    BackupKind,
    RecordedFile,
    SqlServerBackupRecord,
    dump_backup_record,
    manifest_key,
    new_backup_id,
    object_key,
    object_name,
)
from pitrflow.engines.sqlserver.tsql import backup_database_sql, backup_log_sql
from pitrflow.errors import (
    BackupRefusedError,
    ChecksumMismatchError,
    ConfigError,
    PitrError,
    ServerError,
)
from pitrflow.storage.base import CHUNK, HashingReader, Repository, sha256_file
from pitrflow.storage.keyed import encryption_note, start_new_epoch

log = logging.getLogger("pitrflow.sqlserver.backup")

RequestedKind = Literal["full", "incremental", "differential", "log"]
_KINDS: dict[str, BackupKind] = {
    "full": "full", "incremental": "differential", "differential": "differential", "log": "log",
}
_TYPE_LETTER: dict[BackupKind, str] = {"full": "D", "differential": "I", "log": "L"}

DATABASE_STATE_SQL = """\
SELECT recovery_model_desc, state_desc, is_read_only
FROM sys.databases
WHERE name = ?"""
"""Recovery model and state: a log backup of a SIMPLE database is refused before BACKUP."""

SERVER_SQL = """\
SELECT CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition,
       CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version,
       CAST(@@SERVERNAME AS nvarchar(128)) AS server_name"""

DIFFERENTIAL_BASE_SQL = """\
SELECT differential_base_lsn,
       CONVERT(nvarchar(36), differential_base_guid) AS differential_base_guid
FROM sys.master_files
WHERE database_id = DB_ID(?) AND file_id = 1"""
"""The full a differential taken now would be based on (its checkpoint LSN and uuid)."""

_HISTORY_FILTER = "WHERE bs.database_name = ?"
BACKUP_SET_OF_FILE_SQL = BACKUP_HISTORY_SQL.replace(
    _HISTORY_FILTER,
    _HISTORY_FILTER + """
  AND bs.media_set_id = (SELECT MAX(f.media_set_id) FROM msdb.dbo.backupmediafamily AS f
                         WHERE f.physical_device_name = ?)""",
)
"""BACKUP_HISTORY_SQL narrowed to the newest media set written to one file (our new file)."""
if BACKUP_SET_OF_FILE_SQL == BACKUP_HISTORY_SQL:  # pragma: no cover - guards msdb.py edits
    raise RuntimeError("BACKUP_HISTORY_SQL no longer filters on bs.database_name = ?")

_NO_COMPRESSION_EDITIONS = ("Express", "Web")


@dataclass(frozen=True)
class SqlServerBackupOutcome:
    """What a backup run stored, and what it had to decide on the way."""

    record: SqlServerBackupRecord
    requested: str
    started: datetime
    finished: datetime
    statements: tuple[str, ...]
    notes: tuple[str, ...]


def normalize_kind(kind: str) -> BackupKind:
    """pitrflow's names (full, incremental, log) onto SQL Server's backup kinds."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise BackupRefusedError(
            f"unknown backup kind {kind!r}", "use full, incremental (a differential) or log"
        ) from None


def refuse_unsuitable(database: str, kind: BackupKind,
                      state: Sequence[Mapping[str, Any]]) -> None:
    """Refuse, before BACKUP runs, what the server would refuse or what could not be restored."""
    if not state:
        raise BackupRefusedError(
            f"database {database} does not exist on the server",
            "check the instance's database (names are as in sys.databases)",
        )
    row = state[0]
    if str(row.get("state_desc", "ONLINE")).upper() != "ONLINE":
        raise BackupRefusedError(
            f"database {database} is {row.get('state_desc')}, not ONLINE",
            "bring it online (or finish its restore) before backing it up",
        )
    model = str(row.get("recovery_model_desc", "")).upper()
    if kind == "log" and model == "SIMPLE":
        raise BackupRefusedError(
            f"database {database} uses the SIMPLE recovery model, which keeps no log to back up",
            f"for point-in-time restores run ALTER DATABASE [{database.replace(']', ']]')}] "
            "SET RECOVERY FULL, then take a full backup (pitr backup full) to start the log "
            "chain; otherwise schedule only full and incremental backups",
        )


def use_compression(wanted: bool, edition: str | None) -> tuple[bool, str | None]:
    """COMPRESSION where the edition has it: Express and Web refuse the option outright."""
    if wanted and edition and edition.startswith(_NO_COMPRESSION_EDITIONS):
        return False, f"{edition} cannot compress backups; this backup is uncompressed"
    return wanted, None


def differential_base_problem(catalog: SqlServerCatalog, database: str,
                              base: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a differential taken now could not be restored from the repository, or None."""
    row = base[0] if base else {}
    lsn = row.get("differential_base_lsn")
    guid = row.get("differential_base_guid")
    if lsn is None and guid is None:
        return f"database {database} has no full backup to base a differential on"
    fulls = [r for r in catalog.records if r.kind == "full" and r.database == database]
    for record in fulls:
        head = record.rows[0]
        if guid is not None and head.backup_set_uuid is not None:
            if str(guid).upper() == head.backup_set_uuid.upper():
                return None
        elif lsn is not None and int(lsn) == head.checkpoint_lsn:
            return None
    return (f"the server's differential base (full backup with checkpoint LSN {lsn}) is not "
            f"in the repository: a full was taken outside pitrflow since the last one it stored")


def own_backup_rows(rows: Sequence[Mapping[str, Any]], server_file: str,
                    kind: BackupKind) -> list[BackupSetRow]:
    """msdb's rows for the backup just written to ``server_file``, checked to be it."""
    parsed = [row_from_mapping(row, index) for index, row in enumerate(rows)]
    if not parsed:
        raise ServerError(
            f"msdb has no backup history for {server_file} right after BACKUP wrote it",
            "the login needs SELECT on msdb.dbo.backupset, backupmediafamily and "
            "backupmediaset (db_backupoperator plus msdb read access); the file is left "
            "in backup_dir_worker",
        )
    set_ids = {row.backup_set_id for row in parsed}
    newest = max(set_ids)
    parsed = [row for row in parsed if row.backup_set_id == newest]
    head = parsed[0]
    if head.type != _TYPE_LETTER[kind]:
        raise ServerError(
            f"msdb records backup set {newest} in {server_file} as type {head.type}, "
            f"expected {_TYPE_LETTER[kind]}",
            "another backup wrote to the same file; the file is left in backup_dir_worker",
        )
    return parsed


def log_marks(sql: SqlExecutor, rows: Sequence[BackupSetRow]) -> tuple[MarkRow, ...]:
    """The marked transactions a log backup holds, from msdb.dbo.logmarkhistory."""
    head = rows[0]
    if head.type != "L" or head.first_lsn >= head.last_lsn:
        return ()
    found = sql.query(LOG_MARKS_SQL, [head.database_name, str(head.first_lsn),
                                      str(head.last_lsn)],
                      what=f"marked transactions of log backup set {head.backup_set_id}")
    return tuple(mark_from_mapping(row, index) for index, row in enumerate(found))


def store_backup_file(
    repo: Repository,
    instance: InstanceConfig,
    kind: BackupKind,
    backup_id: str,
    rows: Sequence[BackupSetRow],
    worker_file: Path,
    *,
    compression: bool | None,
    duration_seconds: float | None,
    server: Mapping[str, Any] | None = None,
    marks: Sequence[MarkRow] = (),
) -> SqlServerBackupRecord:
    """Hash the file as the worker sees it, copy it in, check the copy, then seal the manifest."""
    if not worker_file.is_file():
        raise ConfigError(
            f"backup file {worker_file} is not visible to the worker",
            f"backup_dir_worker ({instance.backup_dir_worker}) must be the same directory as "
            f"backup_dir_server ({instance.backup_dir_server}) seen from the worker",
        )
    sha256, size = sha256_file(worker_file)
    name = object_name(worker_file.name)
    stored = repo.put_file(object_key(instance.name, kind, backup_id, name), worker_file)
    if stored.size != size or (stored.sha256 is not None and stored.sha256 != sha256):
        repo.delete(stored.key)
        raise ChecksumMismatchError(
            f"repository copy {stored.key} differs from {worker_file} (size {stored.size} vs "
            f"{size})",
            "the file changed while it was copied; take the backup again",
        )
    primary = [row for row in rows if row.mirror == 0]
    if len(primary) != 1:
        raise ServerError(
            f"backup set {rows[0].backup_set_id} has {len(primary)} stripes; pitrflow writes one",
            "another backup wrote to the same file; take the backup again",
        )
    record = SqlServerBackupRecord(
        id=backup_id, instance=instance.name, kind=kind, database=rows[0].database_name,
        rows=tuple(rows),
        files=(RecordedFile(name=name, size=size, sha256=sha256,
                            physical_device_name=primary[0].physical_device_name,
                            family_sequence_number=primary[0].family_sequence_number),),
        compression=compression, checksum=True, duration_seconds=duration_seconds,
        server=dict(server or {}), tool_version=f"pitrflow {_pitrflow_version}",
        encryption=encryption_note(repo),
        marks=tuple(marks),
    )
    repo.put_bytes(manifest_key(instance.name, kind, backup_id), dump_backup_record(record))
    return record


def hash_object(repo: Repository, key: str) -> tuple[str, int]:
    """SHA-256 and size of a stored object, read back in full."""
    reader = HashingReader(repo.open_reader(key), key)
    try:
        while reader.read(CHUNK):
            pass
    finally:
        reader.close()
    return reader.digest.hexdigest(), reader.size


def store_url_backup(
    repo: Repository,
    instance: InstanceConfig,
    kind: BackupKind,
    backup_id: str,
    rows: Sequence[BackupSetRow],
    names_by_url: Mapping[str, str],
    *,
    compression: bool | None,
    duration_seconds: float | None,
    server: Mapping[str, Any] | None = None,
    marks: Sequence[MarkRow] = (),
) -> SqlServerBackupRecord:
    """Seal a backup the server wrote with BACKUP TO URL straight into the repository.

    The objects are already where the repository keeps them; each is read back to
    record its SHA-256, and the manifest, written last, makes the backup visible.
    """
    primary = sorted((row for row in rows if row.mirror == 0),
                     key=lambda row: row.family_sequence_number)
    recorded = sorted(row.physical_device_name for row in primary)
    if recorded != sorted(names_by_url):
        raise ServerError(
            f"backup set {rows[0].backup_set_id} was written to {', '.join(recorded)}, "
            f"not to the {len(names_by_url)} URL(s) pitrflow asked for",
            "another backup wrote to the same URL; take the backup again")
    files = []
    for row in primary:
        name = names_by_url[row.physical_device_name]
        sha256, size = hash_object(repo, object_key(instance.name, kind, backup_id, name))
        files.append(RecordedFile(name=name, size=size, sha256=sha256,
                                  physical_device_name=row.physical_device_name,
                                  family_sequence_number=row.family_sequence_number))
    record = SqlServerBackupRecord(
        id=backup_id, instance=instance.name, kind=kind, database=rows[0].database_name,
        rows=tuple(rows), files=tuple(files), compression=compression, checksum=True,
        duration_seconds=duration_seconds, server=dict(server or {}),
        tool_version=f"pitrflow {_pitrflow_version}", marks=tuple(marks),
    )
    repo.put_bytes(manifest_key(instance.name, kind, backup_id), dump_backup_record(record))
    return record


def take_sqlserver_backup(
    instance: InstanceConfig,
    repo: Repository,
    kind: str,
    allow_full_fallback: bool | None = None,
) -> SqlServerBackupOutcome:
    """One backup of the instance's database, stored and recorded in the repository."""
    wanted = normalize_kind(kind)
    database = instance.database
    notes: list[str] = []
    with open_session(instance) as sql:
        refuse_unsuitable(database, wanted, sql.query(DATABASE_STATE_SQL, [database]))
        server = sql.query(SERVER_SQL)[0]
        actual = wanted
        if wanted == "differential":
            problem = differential_base_problem(
                read_sqlserver_catalog(repo, instance.name), database,
                sql.query(DIFFERENTIAL_BASE_SQL, [database]),
            )
            fallback = (instance.incremental_fallback if allow_full_fallback is None
                        else allow_full_fallback)
            if problem and not fallback:
                raise BackupRefusedError(
                    f"cannot take an incremental (differential) backup of {database}: {problem}",
                    f"take a full backup first (pitr backup full {instance.name})")
            if problem:
                notes.append(f"incremental not possible ({problem}); took a full backup instead")
                actual = "full"
        compression, note = use_compression(instance.compression, server.get("edition"))
        if note:
            notes.append(note)
        outcome = _backup(sql, instance, repo, actual, compression, server, notes)
        record_sqlserver_baseline(sql, instance, repo, outcome[0])  # the drill's; never raises
    return SqlServerBackupOutcome(
        record=outcome[0], requested=kind, started=outcome[1], finished=outcome[2],
        statements=outcome[3], notes=tuple(notes),
    )


def _backup(
    sql: SqlExecutor,
    instance: InstanceConfig,
    repo: Repository,
    kind: BackupKind,
    compression: bool,
    server: Mapping[str, Any],
    notes: list[str],
) -> tuple[SqlServerBackupRecord, datetime, datetime, tuple[str, ...]]:
    started = datetime.now(UTC)
    worker_file: Path | None = None
    if kind == "full":
        start_new_epoch(repo)  # a fresh data key per full chain (encrypted repositories)
    if instance.backup_to_url:
        backup_id, names = _fresh_url_names(instance, repo, kind, started)
        devices = [server_join(instance.backup_dir_server,
                               object_key(instance.name, kind, backup_id, name))
                   for name in names]
        hint = (f"the server needs a credential for {instance.backup_dir_server} (CREATE "
                "CREDENTIAL named after the s3://HOST/BUCKET URL, IDENTITY = 'S3 Access Key'), "
                "with s3:PutObject on the bucket; the login needs db_backupoperator")
    else:
        worker_dir = instance.backup_dir_worker
        if worker_dir is None or not worker_dir.is_dir():
            raise ConfigError(
                f"backup_dir_worker {worker_dir} of instance {instance.name} is not a directory",
                "mount the directory the server writes to (backup_dir_server) there",
            )
        backup_id, worker_file = _fresh_name(instance, repo, kind, worker_dir, started)
        devices = [server_join(instance.backup_dir_server, worker_file.name)]
        names = [worker_file.name]
        hint = (f"the SQL Server service account must be able to write to "
                f"{instance.backup_dir_server}; the login needs db_backupoperator")
    database = instance.database
    if kind == "log":
        statement = backup_log_sql(database, devices, compression=compression)
    else:
        statement = backup_database_sql(database, devices,
                                        differential=kind == "differential",
                                        compression=compression)
    log.info("%s backup of %s to %s", kind, database, ", ".join(devices))
    clock = time.monotonic()
    try:
        sql.run(statement, what=f"{kind} backup of {database}", hint=hint)
    except BaseException:
        # A partial file or object of ours is worth nothing, and must not linger.
        if worker_file is not None:
            with contextlib.suppress(OSError):
                worker_file.unlink()
        else:
            for name in names:
                with contextlib.suppress(PitrError):
                    repo.delete(object_key(instance.name, kind, backup_id, name))
        raise
    duration = time.monotonic() - clock
    rows = own_backup_rows(sql.query(BACKUP_SET_OF_FILE_SQL, [database, devices[0]]),
                           devices[0], kind)
    marks = log_marks(sql, rows)
    server_info = {k: server.get(k) for k in ("edition", "product_version", "server_name")}
    if worker_file is None:
        record = store_url_backup(
            repo, instance, kind, backup_id, rows, dict(zip(devices, names, strict=True)),
            compression=compression, duration_seconds=round(duration, 3), server=server_info,
            marks=marks)
    else:
        record = store_backup_file(
            repo, instance, kind, backup_id, rows, worker_file,
            compression=compression, duration_seconds=round(duration, 3), server=server_info,
            marks=marks,
        )
        try:
            worker_file.unlink()
        except OSError as exc:
            notes.append(f"could not remove {worker_file} after storing it: {exc.strerror}")
    log.info("stored %s backup %s (backup set %s, %s bytes)", kind, record.id,
             record.backup_set_id, record.size_bytes)
    return record, started, datetime.now(UTC), (statement,)


def url_stripe_names(instance: InstanceConfig, kind: BackupKind, backup_id: str) -> list[str]:
    """Object names of a URL backup's stripes; logs are small and always one stripe."""
    stripes = 1 if kind == "log" else instance.url_stripes
    extension = "trn" if kind == "log" else "bak"
    stem = f"{instance.name}_{backup_id}"
    if stripes == 1:
        return [f"{stem}.{extension}"]
    return [f"{stem}_{n}of{stripes}.{extension}" for n in range(1, stripes + 1)]


def _fresh_url_names(instance: InstanceConfig, repo: Repository, kind: BackupKind,
                     started: datetime) -> tuple[str, list[str]]:
    """A backup id no stored object uses (BACKUP TO URL refuses to overwrite one)."""
    for attempt in range(100):
        backup_id = new_backup_id(kind, started, "" if attempt == 0 else f"-{attempt + 1}")
        if next(iter(repo.list(object_key(instance.name, kind, backup_id, ""))), None) is None:
            return backup_id, url_stripe_names(instance, kind, backup_id)
    raise BackupRefusedError(
        f"no free backup id for {instance.name} at {started:%Y-%m-%dT%H:%M:%SZ}",
        "run pitr repo cleanup for the instance and take the backup again")


def _fresh_name(instance: InstanceConfig, repo: Repository, kind: BackupKind,
                worker_dir: Path, started: datetime) -> tuple[str, Path]:
    """A backup id and file name no earlier backup used (BACKUP would append to the file)."""
    extension = "trn" if kind == "log" else "bak"
    for attempt in range(100):
        backup_id = new_backup_id(kind, started, "" if attempt == 0 else f"-{attempt + 1}")
        path = worker_dir / f"{instance.name}_{backup_id}.{extension}"
        taken = repo.list(object_key(instance.name, kind, backup_id, ""))
        if not path.exists() and next(iter(taken), None) is None:
            return backup_id, path
    raise BackupRefusedError(
        f"no free backup file name in {worker_dir} for {instance.name}",
        "remove stale files of this instance from backup_dir_worker",
    )
