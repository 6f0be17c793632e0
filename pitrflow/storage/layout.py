"""The one module that knows how keys are laid out in a repository.

    <instance>/backups/<id>/<file>           objects of one backup
    <instance>/backups/<id>/manifest.json    written last: the truth of a backup
    <instance>/wal/<TLI>/<segment>-<sha256>.zst
    <instance>/timelines/<TLI>.history-<sha256>
    <instance>/marks/<time>_<TLI>_<LSN>.json  one per ship run
    <instance>/drills/<time>.json

WAL and history keys carry the SHA-256 of the stored object, so a listing
alone gives every checksum and no sidecar can drift from its object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

MANIFEST_NAME = "manifest.json"
# Written before an expired backup's manifest is deleted: a backup carrying it
# is never valid, and the next expire finishes deleting it.
EXPIRING_NAME = "expiring.json"
_WAL_RE = re.compile(r"^wal/([0-9A-F]{8})/([0-9A-F]{24})-([0-9a-f]{64})\.zst$")
_HISTORY_RE = re.compile(r"^timelines/([0-9A-F]{8})\.history-([0-9a-f]{64})$")
_MARK_RE = re.compile(r"^marks/(\d{8}T\d{6}\.\d{6}Z)_([0-9A-F]{8})_([0-9A-F]{16})\.json$")
_BACKUP_RE = re.compile(r"^backups/([^/]+)/(.+)$")
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"


def instance_prefix(instance: str) -> str:
    return f"{instance}/"


def catalog_prefixes(instance: str, marks: bool = True) -> list[str]:
    """What a catalog lists: backups, WAL, timeline histories and (unless MARKS is off) the
    marks.  Drill and verify records, and the drills' evidence, are never part of it."""
    parts = ["backups", "marks", "timelines", "wal"] if marks else ["backups", "timelines", "wal"]
    return [f"{instance}/{part}/" for part in parts]


def backup_prefix(instance: str, backup_id: str) -> str:
    return f"{instance}/backups/{backup_id}/"


def backup_object(instance: str, backup_id: str, name: str) -> str:
    return f"{instance}/backups/{backup_id}/{name}"


def manifest_key(instance: str, backup_id: str) -> str:
    return backup_object(instance, backup_id, MANIFEST_NAME)


def wal_key(instance: str, timeline: int, segment: str, sha256: str) -> str:
    return f"{instance}/wal/{timeline:08X}/{segment}-{sha256}.zst"


def history_key(instance: str, timeline: int, sha256: str) -> str:
    return f"{instance}/timelines/{timeline:08X}.history-{sha256}"


def mark_key(instance: str, when: datetime, timeline: int, lsn: int) -> str:
    stamp = when.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{instance}/marks/{stamp}_{timeline:08X}_{lsn:016X}.json"


def verify_key(instance: str, backup_id: str) -> str:
    return f"{instance}/verify/{backup_id}.json"


def drill_key(instance: str, when: datetime) -> str:
    return f"{instance}/drills/{when.astimezone(UTC).strftime(_TIME_FORMAT)}.json"


@dataclass(frozen=True)
class WalEntry:
    key: str
    timeline: int
    segment: str
    sha256: str
    size: int


@dataclass(frozen=True)
class HistoryEntry:
    key: str
    timeline: int
    sha256: str


@dataclass(frozen=True)
class MarkEntry:
    key: str
    time: datetime
    timeline: int
    lsn: int


@dataclass(frozen=True)
class BackupObjectEntry:
    key: str
    backup_id: str
    name: str
    size: int


ParsedKey = WalEntry | HistoryEntry | MarkEntry | BackupObjectEntry | None


def parse_key(instance: str, key: str, size: int) -> ParsedKey:
    """Classify one listed key; None for anything pitrflow did not write."""
    prefix = instance_prefix(instance)
    if not key.startswith(prefix):
        return None
    rel = key[len(prefix):]
    if match := _WAL_RE.match(rel):
        return WalEntry(key, int(match.group(1), 16), match.group(2), match.group(3), size)
    if match := _HISTORY_RE.match(rel):
        return HistoryEntry(key, int(match.group(1), 16), match.group(2))
    if match := _MARK_RE.match(rel):
        when = datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=UTC)
        return MarkEntry(key, when, int(match.group(2), 16), int(match.group(3), 16))
    if match := _BACKUP_RE.match(rel):
        return BackupObjectEntry(key, match.group(1), match.group(2), size)
    return None
