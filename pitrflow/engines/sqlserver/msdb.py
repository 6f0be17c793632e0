"""msdb backup history: the one query pitrflow runs and the rows it yields.

SQL Server records every backup in ``msdb.dbo.backupset`` (one row per backup set)
and ``msdb.dbo.backupmediafamily`` (one row per file: stripe x mirror).  The planner
works on the join of the two, one ``BackupSetRow`` per file, so a recorded JSON copy
of those rows is enough to test every restore decision without a server.
Marked transactions come from ``msdb.dbo.logmarkhistory`` (``LOG_MARKS_SQL``), read
with each log backup and stored with it, so a mark name can be planned by its LSN.

msdb stores times as naive server-local ``datetime`` plus ``time_zone``, the offset
from UTC in 15-minute intervals at backup start (127 = unknown).  The offset moves
with daylight saving, so local times are only comparable after ``row_times_utc``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pitrflow.engines.sqlserver.errors import MsdbHistoryError

UNKNOWN_TIME_ZONE = 127
"""msdb's ``time_zone`` when the server did not know its offset."""

DISK_DEVICE = 2
"""``backupmediafamily.device_type`` of a disk file; only these can be restored FROM DISK."""
URL_DEVICE = 9
"""``device_type`` of BACKUP TO URL (S3 or Azure); restored FROM URL."""
RESTORABLE_DEVICES = frozenset({DISK_DEVICE, URL_DEVICE})
"""Files pitrflow stores and restores; tape and virtual devices (third-party tools) are not."""

BACKUP_HISTORY_SQL = """\
SELECT
    bs.backup_set_id,
    bs.database_name,
    bs.type,
    bs.is_copy_only,
    bs.first_lsn,
    bs.last_lsn,
    bs.checkpoint_lsn,
    bs.database_backup_lsn,
    bs.differential_base_lsn,
    CONVERT(nvarchar(36), bs.differential_base_guid) AS differential_base_guid,
    CONVERT(nvarchar(36), bs.last_recovery_fork_guid) AS recovery_fork_guid,
    CONVERT(nvarchar(36), bs.first_recovery_fork_guid) AS first_recovery_fork_guid,
    bs.backup_start_date,
    bs.backup_finish_date,
    bs.time_zone,
    bs.has_bulk_logged_data,
    bs.media_set_id,
    bmf.family_sequence_number,
    bmf.mirror,
    bmf.physical_device_name,
    bms.media_family_count AS family_count,
    bs.backup_size,
    bs.position,
    CONVERT(nvarchar(36), bs.backup_set_uuid) AS backup_set_uuid,
    bmf.device_type
FROM msdb.dbo.backupset AS bs
JOIN msdb.dbo.backupmediafamily AS bmf ON bmf.media_set_id = bs.media_set_id
JOIN msdb.dbo.backupmediaset AS bms ON bms.media_set_id = bs.media_set_id
WHERE bs.database_name = ?
  AND bs.type IN ('D', 'I', 'L')
ORDER BY bs.backup_set_id, bmf.family_sequence_number, bmf.mirror"""
"""History of one database (the ``?``), one row per backup file, oldest first.

GUIDs are converted to text so every driver returns the same spelling; LSNs stay
numeric(25,0) and are read as ``int``.
"""


LOG_MARKS_SQL = """\
SELECT
    database_name,
    mark_name,
    description,
    user_name,
    lsn,
    mark_time
FROM msdb.dbo.logmarkhistory
WHERE database_name = ?
  AND lsn >= CAST(? AS numeric(25, 0))
  AND lsn < CAST(? AS numeric(25, 0))
ORDER BY lsn"""
"""Marked transactions (BEGIN TRAN name WITH MARK) of one database in one log backup.

Parameters: the database, then the log backup's ``first_lsn`` and ``last_lsn`` as
digit strings (numeric(25,0) does not fit a bigint parameter).  SQL Server writes the
row when the marked transaction commits, so it is there when the log backup that
holds the mark runs; ``last_lsn`` is the next backup's first record, hence ``<``.
"""


@dataclass(frozen=True)
class BackupSetRow:
    """One file of one backup set: ``backupset`` joined with ``backupmediafamily``.

    ``recovery_fork_guid`` is msdb's ``last_recovery_fork_guid`` (the fork the backup
    ends on).  ``position`` (``WITH FILE =``), ``backup_set_uuid`` (what a
    differential's ``differential_base_guid`` names) and ``device_type`` have
    defaults so older recordings without them still load.
    """

    backup_set_id: int
    database_name: str
    type: str
    is_copy_only: bool
    first_lsn: int
    last_lsn: int
    checkpoint_lsn: int
    database_backup_lsn: int | None
    differential_base_lsn: int | None
    differential_base_guid: str | None
    recovery_fork_guid: str | None
    first_recovery_fork_guid: str | None
    backup_start_date: datetime
    backup_finish_date: datetime
    time_zone: int
    has_bulk_logged_data: bool
    media_set_id: int
    family_sequence_number: int
    mirror: int
    physical_device_name: str
    family_count: int
    backup_size: int
    position: int = 1
    backup_set_uuid: str | None = None
    device_type: int = DISK_DEVICE


@dataclass(frozen=True)
class MarkRow:
    """One ``msdb.dbo.logmarkhistory`` row: a committed marked transaction.

    ``lsn`` is the log record where the mark is; ``mark_time`` the commit time as a
    naive server-local ``datetime`` (msdb records no offset for it).  Mark names are
    case-sensitive and need not be unique: the time tells two of one name apart.
    """

    database_name: str
    mark_name: str
    description: str | None
    user_name: str | None
    lsn: int
    mark_time: datetime


def time_zone_offset(time_zone: int) -> timedelta:
    """msdb's ``time_zone`` (15-minute intervals east of UTC) as a ``timedelta``."""
    if time_zone == UNKNOWN_TIME_ZONE:
        raise MsdbHistoryError(
            "time zone is unknown (msdb time_zone 127)",
            "pass the server's offset explicitly",
        )
    if not -48 <= time_zone <= 48:
        raise MsdbHistoryError(
            f"time_zone {time_zone} is outside msdb's range -48..48",
            "time_zone counts 15-minute intervals east of UTC",
        )
    return timedelta(minutes=15 * time_zone)


def local_to_utc(local: datetime, time_zone: int) -> datetime:
    """A naive msdb local time as an aware UTC time."""
    return (local - time_zone_offset(time_zone)).replace(tzinfo=UTC)


def utc_to_local(moment: datetime, time_zone: int) -> datetime:
    """An aware time as the naive local time of a server at ``time_zone``."""
    return (moment.astimezone(UTC) + time_zone_offset(time_zone)).replace(tzinfo=None)


def row_times_utc(row: BackupSetRow) -> tuple[datetime, datetime]:
    """The row's start and finish in UTC, using the row's own ``time_zone``.

    Each row carries the offset in force when it was taken, so a chain that crosses
    a daylight-saving change still orders correctly once converted.
    """
    try:
        offset = time_zone_offset(row.time_zone)
    except MsdbHistoryError as exc:
        raise MsdbHistoryError(
            f"backup set {row.backup_set_id}: {exc.message}",
            "msdb does not know this backup's UTC offset; correct time_zone in the "
            "recording, or leave the backup out if the restore does not need it",
        ) from exc
    start = (row.backup_start_date - offset).replace(tzinfo=UTC)
    finish = (row.backup_finish_date - offset).replace(tzinfo=UTC)
    return start, finish


def rows_from_json(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | Mapping[str, Any],
) -> list[BackupSetRow]:
    """Rows from a recording: a JSON file path, or already-parsed JSON.

    The JSON is either a list of row objects or ``{"rows": [...], ...}`` so a
    recording can carry a description and its marks (``marks_from_json``) beside
    its rows.
    """
    data = _recording(source)
    if isinstance(data, Mapping):
        data = data.get("rows")
    if not isinstance(data, Sequence) or isinstance(data, str):
        raise MsdbHistoryError(
            "msdb recording holds no list of rows",
            'store a JSON list of row objects, or {"rows": [...]}',
        )
    return [row_from_mapping(item, index) for index, item in enumerate(data)]


def _recording(source: str | os.PathLike[str] | Any) -> Any:
    """A recording's parsed JSON (a path is read; anything else is already parsed)."""
    if not isinstance(source, str | os.PathLike):
        return source
    try:
        with Path(source).open(encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MsdbHistoryError(f"cannot read msdb recording {source}: {exc}",
                               'store a JSON list of row objects, or {"rows": [...]}'
                               ) from None


def marks_from_json(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | Mapping[str, Any],
) -> list[MarkRow]:
    """The marked transactions of a recording: its ``"marks"`` list of
    ``LOG_MARKS_SQL`` rows beside ``"rows"``; a recording without one has none."""
    data = _recording(source)
    marks = data.get("marks", []) if isinstance(data, Mapping) else []
    if not isinstance(marks, Sequence) or isinstance(marks, str):
        raise MsdbHistoryError("msdb recording's marks are not a list",
                               'store "marks": [...] of logmarkhistory rows')
    return [mark_from_mapping(item, index) for index, item in enumerate(marks)]


_MARK_COLUMNS = tuple(field.name for field in dataclasses.fields(MarkRow))


def mark_from_mapping(item: Mapping[str, Any], index: int = 0) -> MarkRow:
    """One mark from a driver's row or JSON; unknown or missing columns are refused."""
    if not isinstance(item, Mapping):
        raise MsdbHistoryError(f"logmarkhistory row {index} is not an object",
                               "store marks as objects")
    where = f"logmarkhistory row {index} (mark {item.get('mark_name')!r})"
    unknown = sorted(set(item) - set(_MARK_COLUMNS))
    missing = [name for name in _MARK_COLUMNS if name not in item]
    if unknown or missing:
        column = f"unknown column {unknown[0]}" if unknown else f"column {missing[0]} is missing"
        raise MsdbHistoryError(f"{where}: {column}",
                               f"columns are those of LOG_MARKS_SQL: {', '.join(_MARK_COLUMNS)}")
    try:
        return MarkRow(
            database_name=_as_str(item["database_name"]), mark_name=_as_str(item["mark_name"]),
            description=_as_optional_str(item["description"]),
            user_name=_as_optional_str(item["user_name"]), lsn=_as_int(item["lsn"]),
            mark_time=_as_local_time(item["mark_time"]))
    except (TypeError, ValueError) as exc:
        raise MsdbHistoryError(f"{where}: bad value ({exc})",
                               "the LSN is an integer or digit string, mark_time ISO 8601 "
                               "without offset") from exc


def mark_body(mark: MarkRow) -> dict[str, Any]:
    """A mark as JSON: the LSN as a string (no reader rounds it), the time in ISO form."""
    return {"database_name": mark.database_name, "mark_name": mark.mark_name,
            "description": mark.description, "user_name": mark.user_name,
            "lsn": str(mark.lsn), "mark_time": mark.mark_time.isoformat()}


_FIELDS = {field.name: field for field in dataclasses.fields(BackupSetRow)}


def row_from_mapping(item: Mapping[str, Any], index: int = 0) -> BackupSetRow:
    """One row from a mapping of column name to value (JSON or a driver's row).

    Accepts what drivers return (``Decimal`` LSNs, ``datetime``, ``bool`` bits) and
    what JSON holds (digit strings, ISO times, 0/1).  Unknown columns are refused so
    a misspelt optional column cannot silently fall back to its default.
    """
    if not isinstance(item, Mapping):
        raise MsdbHistoryError(f"msdb row {index} is not an object", "store rows as objects")
    where = f"msdb row {index} (backup_set_id {item.get('backup_set_id')})"
    unknown = sorted(set(item) - set(_FIELDS))
    if unknown:
        raise MsdbHistoryError(
            f"{where}: unknown column {unknown[0]}",
            f"columns are those of BACKUP_HISTORY_SQL: {', '.join(_FIELDS)}",
        )
    values: dict[str, Any] = {}
    for name, field in _FIELDS.items():
        if name not in item:
            if field.default is dataclasses.MISSING:
                raise MsdbHistoryError(
                    f"{where}: column {name} is missing",
                    "record rows with BACKUP_HISTORY_SQL",
                )
            continue
        try:
            values[name] = _CONVERTERS[name](item[name])
        except (TypeError, ValueError) as exc:
            raise MsdbHistoryError(
                f"{where}: column {name} has bad value {item[name]!r} ({exc})",
                "LSNs are integers or digit strings, times ISO 8601 without offset, "
                "GUIDs 36-character text",
            ) from exc
    return BackupSetRow(**values)


def _as_int(value: Any) -> int:
    """An integer column; floats are refused because JSON floats lose LSN digits."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError("not an exact integer")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            raise ValueError("not a whole number")
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ValueError("not an integer")


def _as_optional_int(value: Any) -> int | None:
    return None if value is None else _as_int(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return value.strip().lower() in ("1", "true")
    raise ValueError("not a bit")


def _as_local_time(value: Any) -> datetime:
    """A naive server-local time; an aware one would mean the recorder converted it."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        raise ValueError("msdb times are naive server-local times")
    return moment


def _as_optional_str(value: Any) -> str | None:
    return None if value is None else _as_str(value)


def _as_guid(value: Any) -> str | None:
    """GUIDs upper-cased in canonical form, the spelling CONVERT(nvarchar) returns."""
    return None if value is None else str(uuid.UUID(str(value))).upper()


def _as_type(value: Any) -> str:
    text = str(value).strip().upper()
    if len(text) != 1:
        raise ValueError("backup type is one letter")
    return text


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "backup_set_id": _as_int,
    "database_name": _as_str,
    "type": _as_type,
    "is_copy_only": _as_bool,
    "first_lsn": _as_int,
    "last_lsn": _as_int,
    "checkpoint_lsn": _as_int,
    "database_backup_lsn": _as_optional_int,
    "differential_base_lsn": _as_optional_int,
    "differential_base_guid": _as_guid,
    "recovery_fork_guid": _as_guid,
    "first_recovery_fork_guid": _as_guid,
    "backup_start_date": _as_local_time,
    "backup_finish_date": _as_local_time,
    "time_zone": _as_int,
    "has_bulk_logged_data": _as_bool,
    "media_set_id": _as_int,
    "family_sequence_number": _as_int,
    "mirror": _as_int,
    "physical_device_name": _as_str,
    "family_count": _as_int,
    "backup_size": _as_int,
    "position": _as_int,
    "backup_set_uuid": _as_guid,
    "device_type": _as_int,
}
