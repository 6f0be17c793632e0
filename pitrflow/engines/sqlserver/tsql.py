"""T-SQL text for backups and restores, built from values, never run here.

Every name goes through ``quote_name`` and every path or logical file name through
``quote_string``, so database and file names with ``]``, quotes or spaces cannot
change the statement.  Each builder returns one statement with no trailing
semicolon: BACKUP and RESTORE must be sent one at a time, outside a transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pitrflow.engines.sqlserver.paths import is_url
from pitrflow.engines.sqlserver.planner import RestoreStep, SqlServerRestorePlan

_SYSNAME_LENGTH = 128


def quote_name(name: str) -> str:
    """``[name]`` with ``]`` doubled, as QUOTENAME does; refuses what it would NULL."""
    if not name or len(name) > _SYSNAME_LENGTH or "\x00" in name:
        raise ValueError(f"not a SQL Server identifier: {name!r} (1 to 128 characters, no NUL)")
    return "[" + name.replace("]", "]]") + "]"


def quote_string(text: str) -> str:
    """``N'text'`` with ``'`` doubled: a Unicode literal, so non-ASCII paths survive."""
    if "\x00" in text:
        raise ValueError(f"NUL character in T-SQL string literal: {text!r}")
    return "N'" + text.replace("'", "''") + "'"


def format_stopat(moment: datetime) -> str:
    """A naive server-local time as STOPAT wants it: ``YYYY-MM-DDTHH:MM:SS.fff``."""
    if moment.tzinfo is not None:
        raise ValueError("STOPAT takes the server's local time: convert, then drop tzinfo")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


# S3 allows 10,000 parts per object and SQL Server sends one part per transfer: the
# 20 MB maximum lets one URL stripe hold about 200 GB instead of about 100 GB.
URL_MAXTRANSFERSIZE = 20 * 1024 * 1024


def _paths(path: str | Sequence[str]) -> list[str]:
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or any(not p for p in paths):
        raise ValueError("a backup device needs at least one non-empty file path")
    if len({is_url(p) for p in paths}) > 1:
        raise ValueError("a backup's stripes are either all files or all URLs")
    return paths


def _disks(path: str | Sequence[str]) -> str:
    """``DISK = N'a', DISK = N'b'`` (or ``URL = ...``): one clause per stripe, in order."""
    return ", ".join(f"{'URL' if is_url(p) else 'DISK'} = {quote_string(p)}"
                     for p in _paths(path))


def _backup_options(compression: bool, checksum: bool, stats: int | None,
                    to_url: bool = False) -> list[str]:
    """Options spelled out both ways so a server default cannot change the backup."""
    options = ["COMPRESSION" if compression else "NO_COMPRESSION"]
    if to_url:
        options.append(f"MAXTRANSFERSIZE = {URL_MAXTRANSFERSIZE}")
    options.append("CHECKSUM" if checksum else "NO_CHECKSUM")
    if stats is not None:
        if not 1 <= stats <= 100:
            raise ValueError(f"STATS is a percentage from 1 to 100, not {stats}")
        options.append(f"STATS = {stats}")
    return options


def backup_database_sql(
    db: str,
    path: str | Sequence[str],
    differential: bool = False,
    compression: bool = True,
    checksum: bool = True,
    stats: int | None = 10,
) -> str:
    """BACKUP DATABASE to one file or URL, or to several as stripes."""
    options = _backup_options(compression, checksum, stats, is_url(_paths(path)[0]))
    if differential:
        options.insert(0, "DIFFERENTIAL")
    return f"BACKUP DATABASE {quote_name(db)} TO {_disks(path)} WITH {', '.join(options)}"


def backup_log_sql(
    db: str,
    path: str | Sequence[str],
    compression: bool = True,
    checksum: bool = True,
    stats: int | None = 10,
) -> str:
    """BACKUP LOG to one file or URL, or to several as stripes."""
    options = _backup_options(compression, checksum, stats, is_url(_paths(path)[0]))
    return f"BACKUP LOG {quote_name(db)} TO {_disks(path)} WITH {', '.join(options)}"


def restore_filelistonly_sql(path: str | Sequence[str], position: int = 1) -> str:
    """RESTORE FILELISTONLY: the logical file names a restore must MOVE."""
    return f"RESTORE FILELISTONLY FROM {_disks(path)} WITH FILE = {_position(position)}"


def _position(position: int) -> int:
    if position < 1:
        raise ValueError(f"backup set position starts at 1, not {position}")
    return position


def stop_option(plan: SqlServerRestorePlan) -> str | None:
    """Where each log restore stops: STOPAT for a time, STOPATMARK for an LSN or a mark
    (STOPBEFOREMARK when exclusive), nothing for the latest or an immediate restore.

    A mark is named, with AFTER its commit time when older marks share its name; an
    LSN is written ``'lsn:<decimal>'`` as RESTORE documents it.
    """
    verb = "STOPBEFOREMARK" if plan.exclusive else "STOPATMARK"
    if plan.mark is not None:
        option = f"{verb} = {quote_string(plan.mark.mark_name)}"
        if plan.mark_after_local is not None:
            option += f" AFTER '{format_stopat(plan.mark_after_local)}'"
        return option
    if plan.target_lsn is not None:
        return f"{verb} = 'lsn:{plan.target_lsn:d}'"
    if plan.stopat_local is not None:
        return f"STOPAT = '{format_stopat(plan.stopat_local)}'"
    return None


def _restore_from(verb: str, db: str, step: RestoreStep, options: list[str]) -> str:
    head = f"RESTORE {verb} {db} FROM {_disks(step.files)}"
    return f"{head} WITH {', '.join([f'FILE = {_position(step.position)}', *options])}"


def restore_script(
    plan: SqlServerRestorePlan,
    new_db_name: str,
    moves: Mapping[str, str],
    replace: bool = False,
) -> list[str]:
    """The statements that carry out ``plan`` into ``new_db_name``, in order.

    Everything is restored WITH NORECOVERY and recovered by a last statement, so a
    failed step leaves a database that is visibly restoring, never a half-recovered
    one.  MOVE only applies to the full (later steps reuse its files).  The same
    stop option (``stop_option``) goes on every log, so whichever log holds the target
    stops there and none can roll the database past it.
    """
    db = quote_name(new_db_name)
    full_options = ["NORECOVERY"]
    for logical, physical in moves.items():
        if not logical or not physical:
            raise ValueError(f"MOVE needs a logical name and a path: {logical!r} -> {physical!r}")
        full_options.append(f"MOVE {quote_string(logical)} TO {quote_string(physical)}")
    if replace:
        full_options.append("REPLACE")
    statements = [_restore_from("DATABASE", db, plan.full, full_options)]
    if plan.differential is not None:
        statements.append(_restore_from("DATABASE", db, plan.differential, ["NORECOVERY"]))
    log_options = ["NORECOVERY"]
    stop = stop_option(plan)
    if stop is not None:
        log_options.append(stop)
    statements.extend(_restore_from("LOG", db, log, log_options) for log in plan.logs)
    statements.append(f"RESTORE DATABASE {db} WITH RECOVERY")
    return statements
