"""Carry out a SQL Server restore plan from the repository.

``prepare_restore`` is pure: catalog and target in, the plan, the files to stage and
the name to restore under out, so a dry run shows exactly what a restore would do.
``execute_restore`` then:

1. refuses to overwrite an existing database unless ``replace`` was asked for;
2. checks the worker has room, and copies each planned file out of the repository
   into a staging directory under ``backup_dir_worker``, checking its SHA-256 on the
   way, because the repository, not whatever msdb remembers, is the truth;
3. reads ``RESTORE FILELISTONLY`` of the full to MOVE every file to a new name
   derived from the new database name (so a restore beside the source never
   collides with its files);
4. runs the script statement by statement (full, differential, logs, all WITH
   NORECOVERY and the same STOPAT or STOPATMARK on every log; then WITH RECOVERY);
5. removes the staging directory, and on failure drops a database it created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitrflow.config import InstanceConfig
from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.sqlserver.catalog import SqlServerCatalog, require_database
from pitrflow.engines.sqlserver.connection import SqlExecutor, SqlServerStatementError
from pitrflow.engines.sqlserver.paths import safe_file_stem, server_dirname, server_join
from pitrflow.engines.sqlserver.planner import (
    RestoreStep,
    SqlServerRestorePlan,
    plan_restore_to,
)
from pitrflow.engines.sqlserver.record import SOURCE_RECORDED, SqlServerBackupRecord
from pitrflow.engines.sqlserver.tsql import (
    quote_name,
    restore_filelistonly_sql,
    restore_script,
)
from pitrflow.errors import ConfigError, RestoreRefusedError
from pitrflow.storage.base import CHUNK, HashingReader, Repository

log = logging.getLogger("pitrflow.sqlserver.restore")

DATABASE_EXISTS_SQL = "SELECT state_desc FROM sys.databases WHERE name = ?"
DEFAULT_PATHS_SQL = """\
SELECT CAST(SERVERPROPERTY('InstanceDefaultDataPath') AS nvarchar(4000)) AS data_path,
       CAST(SERVERPROPERTY('InstanceDefaultLogPath') AS nvarchar(4000)) AS log_path"""
"""Where the server puts new databases (SQL Server 2012+); NULL on older servers."""

STAGING_PREFIX = "pitrflow-restore-"
_STAMP = "%Y%m%dT%H%M%SZ"
_DISK_MARGIN = 64 * 1024 * 1024


@dataclass(frozen=True)
class StagedFile:
    """One planned backup file: where it is in the repository and where the server reads it.

    ``worker_path`` is None when the server reads the repository's object itself
    (BACKUP TO URL instances): nothing is staged then.
    """

    backup_id: str
    key: str
    sha256: str
    size: int
    worker_path: Path | None
    server_path: str


@dataclass(frozen=True)
class PreparedRestore:
    """Everything decided before touching a server.

    ``plan`` names files as msdb recorded them; ``staged_plan`` is the same plan
    reading the staged copies, which is what the script restores from.
    """

    instance: str
    database: str
    plan: SqlServerRestorePlan
    staged_plan: SqlServerRestorePlan
    new_name: str
    replace: bool
    stamp: str
    staging_worker: Path | None
    staging_server: str
    files: tuple[StagedFile, ...]
    records: tuple[SqlServerBackupRecord, ...]
    data_dir_server: str

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


def default_restore_name(database: str, when: datetime) -> str:
    """``<db>_restored_<UTC stamp>``, shortened to fit SQL Server's 128-character names."""
    suffix = f"_restored_{when.astimezone(UTC).strftime(_STAMP)}"
    return database[: 128 - len(suffix)] + suffix


def as_target(target: RestoreTarget | datetime | None) -> RestoreTarget:
    """A time (or None, the latest) as the RestoreTarget it stands for."""
    if isinstance(target, RestoreTarget):
        return target
    return RestoreTarget(time=target)


def prepare_restore(
    instance: InstanceConfig,
    catalog: SqlServerCatalog,
    target: RestoreTarget | datetime | None,
    new_name: str | None = None,
    replace: bool = False,
    now: datetime | None = None,
) -> PreparedRestore:
    """Plan from the repository's catalog and decide names and staging paths; pure.

    ``target`` is any RestoreTarget SQL Server can stop at, or a time (None: the
    latest); marks are looked up among those recorded with the catalog's log backups.
    """
    when = now or datetime.now(UTC)
    stamp = when.astimezone(UTC).strftime(_STAMP)
    database = instance.database
    plan = plan_restore_to(require_database(catalog, database), as_target(target),
                           catalog.marks(database))
    name = new_name or default_restore_name(database, when)
    try:
        quote_name(name)
    except ValueError as exc:
        raise RestoreRefusedError(f"cannot restore as {name!r}: {exc}",
                                  "choose a name of 1 to 128 characters") from None
    staging_worker: Path | None = None
    if instance.backup_to_url:
        # The server reads the repository's objects where they are: nothing to stage.
        staging_server = instance.backup_dir_server
    elif instance.backup_dir_worker is None or not instance.backup_dir_server:
        raise ConfigError(f"instance {instance.name} has no backup_dir_server/backup_dir_worker",
                          "set both: the server reads staged backup files from there")
    else:
        staging_worker = instance.backup_dir_worker / f"{STAGING_PREFIX}{stamp}"
        staging_server = server_join(instance.backup_dir_server, f"{STAGING_PREFIX}{stamp}")
    files: list[StagedFile] = []
    records: list[SqlServerBackupRecord] = []

    def stage(step: RestoreStep) -> RestoreStep:
        record = catalog.record_for(step.backup_set_id)
        if record is None:  # the plan came from this catalog's rows
            raise RestoreRefusedError(f"backup set {step.backup_set_id} is not in the catalog",
                                      "run pitr info and plan again")
        records.append(record)
        paths = []
        for device in step.files:
            stored = record.file_for(device)
            if stored is None:
                raise RestoreRefusedError(
                    f"backup {record.id} does not hold the file msdb recorded as {device}",
                    "the backup is incomplete; plan to a target it does not cover")
            key = record.key(stored.name)
            if staging_worker is None:
                worker_path, server_file = None, server_join(staging_server, key)
            else:
                worker_path = staging_worker / record.id / stored.name
                server_file = server_join(staging_server, record.id, stored.name)
            files.append(StagedFile(
                backup_id=record.id, key=key, sha256=stored.sha256, size=stored.size,
                worker_path=worker_path, server_path=server_file))
            paths.append(files[-1].server_path)
        return dataclasses.replace(step, files=tuple(paths))

    staged_plan = dataclasses.replace(
        plan,
        full=stage(plan.full),
        differential=None if plan.differential is None else stage(plan.differential),
        logs=tuple(stage(step) for step in plan.logs),
    )
    return PreparedRestore(
        instance=instance.name, database=database, plan=plan, staged_plan=staged_plan,
        new_name=name, replace=replace, stamp=stamp, staging_worker=staging_worker,
        staging_server=staging_server, files=tuple(files), records=tuple(records),
        data_dir_server=instance.data_dir_server,
    )


def dry_run_script(prepared: PreparedRestore) -> list[str]:
    """The statements a restore runs; MOVE clauses come from the FILELISTONLY it starts with."""
    full = prepared.staged_plan.full
    return [restore_filelistonly_sql(full.files, full.position),
            *restore_script(prepared.staged_plan, prepared.new_name, {}, prepared.replace)]


def move_targets(
    filelist: Sequence[Mapping[str, Any]],
    new_name: str,
    data_dir: str | None,
    log_dir: str | None,
) -> dict[str, str]:
    """MOVE targets for every file of the backup, named after the new database.

    ``filelist`` rows are RESTORE FILELISTONLY's (LogicalName, PhysicalName, Type,
    FileId).  The primary data file becomes ``<name>.mdf``, other data files
    ``<name>_<FileId>.ndf``, the first log ``<name>_log.ldf`` and further logs
    ``<name>_log<FileId>.ldf``; FILESTREAM and full-text containers are directories.
    Without a configured or default directory a file stays in its original one.
    """
    stem = safe_file_stem(new_name)
    moves: dict[str, str] = {}
    first_log = True
    for row in sorted(filelist, key=lambda r: int(r.get("FileId") or 0)):
        logical = str(row["LogicalName"])
        original = str(row.get("PhysicalName") or "")
        kind = str(row.get("Type") or "D").upper()
        file_id = int(row.get("FileId") or 0)
        if kind == "L":
            name = f"{stem}_log.ldf" if first_log else f"{stem}_log{file_id}.ldf"
            first_log = False
            directory = log_dir or data_dir
        elif kind == "S":
            name, directory = f"{stem}_fs{file_id}", data_dir
        elif kind == "F":
            name, directory = f"{stem}_ft{file_id}", data_dir
        else:
            name = f"{stem}.mdf" if file_id == 1 else f"{stem}_{file_id}.ndf"
            directory = data_dir
        if not directory:
            if not original:
                raise RestoreRefusedError(
                    f"no directory for file {logical} of the restored database",
                    "set data_dir_server for the instance")
            directory = server_dirname(original)
        moves[logical] = server_join(directory, name)
    return moves


@dataclass
class SqlServerRestoreOutcome:
    """What a restore did, with the time each phase took (seconds)."""

    prepared: PreparedRestore
    statements: list[str]
    replaced: bool
    timings: dict[str, float]
    moves: dict[str, str]


def require_backup_data(prepared: PreparedRestore) -> None:
    """Refuse a plan that uses placeholders imported from recorded msdb rows."""
    imported = sorted({r.id for r in prepared.records if r.source == SOURCE_RECORDED})
    if imported:
        raise RestoreRefusedError(
            f"backup {imported[0]} was imported from recorded msdb rows and holds no backup data",
            "recorded-row backups are for planning and dry runs only (--dry-run)")


def execute_restore(
    prepared: PreparedRestore,
    repo: Repository,
    sql: SqlExecutor,
    progress: Callable[[str], None] | None = None,
) -> SqlServerRestoreOutcome:
    """Stage, restore and recover; the database is usable when this returns."""
    say = progress or (lambda text: log.info("%s", text))
    require_backup_data(prepared)
    timings: dict[str, float] = {}
    exists = sql.scalar(DATABASE_EXISTS_SQL, [prepared.new_name]) is not None
    if exists and not prepared.replace:
        raise RestoreRefusedError(
            f"database {prepared.new_name} already exists on the server",
            "pass --replace to overwrite it, or restore under another name (the default "
            f"is {prepared.database}_restored_<time>)")
    replaced = exists and prepared.replace
    _check_room(prepared)
    try:
        clock = time.monotonic()
        if prepared.staging_worker is None:
            say(f"checking {len(prepared.files)} objects ({prepared.size_bytes} bytes) "
                "against their SHA-256 before the server reads them")
        else:
            say(f"staging {len(prepared.files)} files ({prepared.size_bytes} bytes) in "
                f"{prepared.staging_worker}")
        for staged in prepared.files:
            _stage(repo, staged)
        timings["stage"] = round(time.monotonic() - clock, 3)

        clock = time.monotonic()
        full = prepared.staged_plan.full
        filelist = sql.query(restore_filelistonly_sql(full.files, full.position),
                             what=f"RESTORE FILELISTONLY of backup {prepared.records[0].id}")
        paths = sql.query(DEFAULT_PATHS_SQL)
        defaults = paths[0] if paths else {}
        moves = move_targets(filelist, prepared.new_name,
                             prepared.data_dir_server or defaults.get("data_path"),
                             prepared.data_dir_server or defaults.get("log_path"))
        statements = restore_script(prepared.staged_plan, prepared.new_name, moves, replaced)
        for index, statement in enumerate(statements, 1):
            say(f"step {index}/{len(statements)}: {statement}")
            sql.run(statement, what=f"restore step {index} of {len(statements)} into "
                                    f"{prepared.new_name}",
                    hint=_failure_hint(prepared, replaced))
        timings["restore"] = round(time.monotonic() - clock, 3)
    except BaseException:
        if not replaced:
            _drop_if_restoring(sql, prepared.new_name)
        raise
    finally:
        if prepared.staging_worker is not None:
            shutil.rmtree(prepared.staging_worker, ignore_errors=True)
    return SqlServerRestoreOutcome(prepared, statements, replaced, timings, moves)


def _failure_hint(prepared: PreparedRestore, replaced: bool) -> str:
    if replaced:
        return (f"database {prepared.new_name} is left RESTORING; close other sessions "
                f"(ALTER DATABASE ... SET SINGLE_USER WITH ROLLBACK IMMEDIATE) and restore "
                f"again, or DROP DATABASE it")
    return ("the partly restored database is dropped; the login needs dbcreator (or "
            "CREATE ANY DATABASE) and the service account must read backup_dir_server and "
            "write the data directory")


def _check_room(prepared: PreparedRestore) -> None:
    """Refuse up front when the staging directory's disk cannot hold the planned files."""
    if prepared.staging_worker is None:
        return
    directory = prepared.staging_worker.parent
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise ConfigError(f"backup_dir_worker {directory} is not usable: {exc.strerror}",
                          "mount the directory the server reads backups from there") from None
    needed = prepared.size_bytes + _DISK_MARGIN
    if free < needed:
        raise RestoreRefusedError(
            f"{directory} has {free} bytes free, staging the restore needs {needed}",
            "free space in backup_dir_worker, or restore to an earlier target with a "
            "shorter log chain")


def _stage(repo: Repository, staged: StagedFile) -> None:
    """Copy one object out of the repository, checking size and SHA-256 as it streams.

    Without a staging path (the server reads the object by URL) the object is only
    read and checked: a damaged backup is refused before RESTORE touches anything.
    """
    reader = HashingReader(repo.open_reader(staged.key), staged.key)
    try:
        if staged.worker_path is None:
            while reader.read(CHUNK):
                pass
        else:
            staged.worker_path.parent.mkdir(parents=True, exist_ok=True)
            with open(staged.worker_path, "wb") as out:
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
    finally:
        reader.close()
    reader.verify(staged.sha256, staged.size)


def _drop_if_restoring(sql: SqlExecutor, name: str) -> None:
    """Drop what this restore left half-done; a database in any other state is not ours."""
    with contextlib.suppress(SqlServerStatementError):
        if sql.scalar(DATABASE_EXISTS_SQL, [name]) == "RESTORING":
            sql.run(f"DROP DATABASE {quote_name(name)}", what=f"drop of {name}")
