"""SQL Server backups in the repository: where they go and the manifest that makes them real.

Layout, per instance (the PostgreSQL layout in ``pitrflow.storage.layout`` is untouched)::

    <instance>/backups/<id>/<file>             full and differential backup files
    <instance>/backups/<id>/manifest.json      written last: the truth of that backup
    <instance>/logs/<id>/<file>                transaction-log backup files
    <instance>/logs/<id>/manifest.json

``<id>`` is ``YYYYMMDDTHHMMSSZ-F`` (full), ``-D`` (differential) or ``-L`` (log), the
worker's UTC clock when the backup began; recorded-row imports use the backup's
recorded finish time and add ``-<backup_set_id>``.  Logs live apart from full and
differential backups so listing the chain anchors stays cheap when there are
thousands of 15-minute logs.

The manifest (kind ``sqlserver-backup``, sealed by ``catalog.manifest.dump_record``)
holds msdb's rows for the backup set exactly as recorded (``BACKUP_HISTORY_SQL``
columns), a log backup's marked transactions (``LOG_MARKS_SQL`` rows whose LSN it
holds, under ``marks``), and for each file its object name, size and SHA-256.  msdb
dies with the server; these manifests are what a restore plans from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import Any, Literal

from pitrflow.catalog.records import dump_record, load_record
from pitrflow.engines.sqlserver.errors import MsdbHistoryError
from pitrflow.engines.sqlserver.msdb import (
    BackupSetRow,
    MarkRow,
    mark_body,
    mark_from_mapping,
    row_from_mapping,
)
from pitrflow.errors import RepositoryError
from pitrflow.storage.layout import MANIFEST_NAME

RECORD_KIND = "sqlserver-backup"
BackupKind = Literal["full", "differential", "log"]
SOURCE_BACKUP = "backup"
SOURCE_RECORDED = "recorded-rows"

_KIND_OF_TYPE: dict[str, BackupKind] = {"D": "full", "I": "differential", "L": "log"}
_SUFFIX: dict[BackupKind, str] = {"full": "F", "differential": "D", "log": "L"}
_AREA: dict[BackupKind, str] = {"full": "backups", "differential": "backups", "log": "logs"}
_ID_STAMP = "%Y%m%dT%H%M%SZ"
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.()+-]{0,200}$")


def kind_of_type(backup_type: str) -> BackupKind:
    """msdb's one-letter ``type`` as a backup kind; only D, I and L are restorable."""
    try:
        return _KIND_OF_TYPE[backup_type]
    except KeyError:
        raise MsdbHistoryError(
            f"backup type {backup_type!r} is not a full (D), differential (I) or log (L)",
            "file and partial backups are not supported",
        ) from None


def new_backup_id(kind: BackupKind, when: datetime, suffix: str = "") -> str:
    """``20260314T021500Z-L``: sortable by time, kind visible at a glance."""
    stamp = when.astimezone(UTC).strftime(_ID_STAMP)
    return f"{stamp}-{_SUFFIX[kind]}{suffix}"


def area(kind: BackupKind) -> str:
    return _AREA[kind]


def record_prefix(instance: str, kind: BackupKind, backup_id: str) -> str:
    return f"{instance}/{_AREA[kind]}/{backup_id}/"


def object_key(instance: str, kind: BackupKind, backup_id: str, name: str) -> str:
    return record_prefix(instance, kind, backup_id) + name


def manifest_key(instance: str, kind: BackupKind, backup_id: str) -> str:
    return object_key(instance, kind, backup_id, MANIFEST_NAME)


def device_basename(physical_device_name: str) -> str:
    """The file name of a server path, Windows (``D:\\x\\y.bak``, ``\\\\nas\\s\\y.bak``) or not."""
    return PureWindowsPath(physical_device_name).name


def object_name(physical_device_name: str) -> str:
    """A safe object name for a backup file: its base name, other characters replaced."""
    name = re.sub(r"[^A-Za-z0-9_.()+-]", "_", device_basename(physical_device_name)) or "backup"
    name = name.lstrip("._-") or "backup"
    if not _OBJECT_NAME.match(name) or name == MANIFEST_NAME:
        name = f"file-{name[:190]}"
    return name


@dataclass(frozen=True)
class RecordedFile:
    """One backup file in the repository: a stripe of the backup set, as msdb names it."""

    name: str
    size: int
    sha256: str
    physical_device_name: str
    family_sequence_number: int


@dataclass(frozen=True)
class SqlServerBackupRecord:
    """A backup set as the repository holds it.

    ``rows`` are msdb's rows for the set (one per file, mirrors included);
    ``files`` the stripes of mirror 0 that were stored; ``marks`` the marked
    transactions a log backup holds (older manifests have none).  ``source`` is
    ``recorded-rows`` for sets imported from a recording, whose files are
    placeholders: they can be planned from, never restored.
    """

    id: str
    instance: str
    kind: BackupKind
    database: str
    rows: tuple[BackupSetRow, ...]
    files: tuple[RecordedFile, ...]
    source: str = SOURCE_BACKUP
    compression: bool | None = None
    checksum: bool | None = None
    duration_seconds: float | None = None
    server: Mapping[str, Any] | None = None
    tool_version: str = ""
    # How the repository encrypted the files ({"cipher", "data_key"}); None: unencrypted.
    encryption: Mapping[str, str] | None = None
    marks: tuple[MarkRow, ...] = ()

    @property
    def backup_set_id(self) -> int:
        return self.rows[0].backup_set_id

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def key(self, name: str) -> str:
        return object_key(self.instance, self.kind, self.id, name)

    def file_for(self, physical_device_name: str) -> RecordedFile | None:
        return next(
            (f for f in self.files if f.physical_device_name == physical_device_name), None
        )


def _row_body(row: BackupSetRow) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for field in fields(BackupSetRow):
        value = getattr(row, field.name)
        body[field.name] = value.isoformat() if isinstance(value, datetime) else value
    return body


def dump_backup_record(record: SqlServerBackupRecord) -> bytes:
    """The sealed manifest: a self-checksummed JSON document."""
    return dump_record(RECORD_KIND, {
        "id": record.id,
        "instance": record.instance,
        "engine": "sqlserver",
        "type": record.kind,
        "database": record.database,
        "source": record.source,
        # LSNs are numeric(25,0): written as strings so no JSON reader rounds them.
        "msdb_rows": [
            {k: str(v) if k.endswith("_lsn") and v is not None else v
             for k, v in _row_body(row).items()}
            for row in record.rows
        ],
        "marks": [mark_body(mark) for mark in record.marks],
        "files": [
            {"name": f.name, "size": f.size, "sha256": f.sha256,
             "physical_device_name": f.physical_device_name,
             "family_sequence_number": f.family_sequence_number}
            for f in record.files
        ],
        "compression": record.compression,
        "backup_checksum": record.checksum,  # WITH CHECKSUM; "checksum" seals the record
        "duration_seconds": record.duration_seconds,
        "server": dict(record.server or {}),
        "tool_version": record.tool_version,
        **({"encryption": dict(record.encryption)} if record.encryption else {}),
    })


def load_backup_record(data: bytes, key: str) -> SqlServerBackupRecord:
    """A manifest read back; anything malformed is refused naming the key."""
    doc = load_record(RECORD_KIND, data, key)
    try:
        rows = tuple(row_from_mapping(item, index)
                     for index, item in enumerate(doc["msdb_rows"]))
        files = tuple(
            RecordedFile(name=str(f["name"]), size=int(f["size"]), sha256=str(f["sha256"]),
                         physical_device_name=str(f["physical_device_name"]),
                         family_sequence_number=int(f["family_sequence_number"]))
            for f in doc["files"]
        )
        marks = tuple(mark_from_mapping(item, index)
                      for index, item in enumerate(doc.get("marks", [])))
        kind = doc["type"]
        if kind not in _SUFFIX:
            raise ValueError(f"type {kind!r}")
        record = SqlServerBackupRecord(
            id=str(doc["id"]), instance=str(doc["instance"]), kind=kind,
            database=str(doc["database"]), rows=rows, files=files,
            source=str(doc.get("source", SOURCE_BACKUP)),
            compression=doc.get("compression"), checksum=doc.get("backup_checksum"),
            duration_seconds=doc.get("duration_seconds"), server=doc.get("server") or {},
            tool_version=str(doc.get("tool_version", "")), marks=marks,
            encryption=doc.get("encryption") or None,
        )
    except (KeyError, TypeError, ValueError, MsdbHistoryError) as exc:
        raise RepositoryError(f"{key} lacks a valid field: {exc}",
                              "it may be damaged; run pitr verify") from None
    if not rows:
        raise RepositoryError(f"{key} records no msdb rows", "it may be damaged; run pitr verify")
    return record
