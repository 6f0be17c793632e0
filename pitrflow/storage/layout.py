"""The one module that knows how keys are laid out in a repository.

    <instance>/backups/<id>/<file>           objects of one backup
    <instance>/backups/<id>/manifest.json    written last: the truth of a backup
    <instance>/wal/<TLI>/<segment>-<sha256>.zst
    <instance>/partial/<TLI>/<segment>_<LSN>_<time>-<sha256>.zst   follow mode: the
                                             segment in progress, valid up to LSN
    <instance>/follow/status.json            follow mode: the follower's heartbeat
    <instance>/timelines/<TLI>.history-<sha256>
    <instance>/marks/<time>_<TLI>_<LSN>.json  one per ship run
    <instance>/baselines/<time>_<TLI>_<LSN>_<origin>.json.zst
        the source's per-table facts, read right after the mark (origin `mark`,
        same time, timeline and LSN as the mark's key) or the backup (origin
        `backup`: its stop time, timeline and stop LSN) it is named after
    <instance>/restore-points/<time>_<TLI>_<LSN>_<name>.json  one per pitr mark --name
    <instance>/drills/<time>.json
    <instance>/capabilities.json             what the server was found able to do
    SQL Server: <instance>/{backups,logs}/<id>/baseline.json.zst beside the manifest

WAL and history keys carry the SHA-256 of the stored object, so a listing
alone gives every checksum and no sidecar can drift from its object.  A
baseline's key carries the time and LSN of what it is named after, so
retention decides about it from the listing alone, exactly as about marks.  A
partial segment lives under its own prefix and name pattern, so nothing that
looks for whole segments (restore_command, verify, retention) can take one
for a whole segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

MANIFEST_NAME = "manifest.json"
# Written before an expired backup's manifest is deleted: a backup carrying it
# is never valid, and the next expire finishes deleting it.
EXPIRING_NAME = "expiring.json"
_WAL_RE = re.compile(r"^wal/([0-9A-F]{8})/([0-9A-F]{24})-([0-9a-f]{64})\.zst$")
_HISTORY_RE = re.compile(r"^timelines/([0-9A-F]{8})\.history-([0-9a-f]{64})$")
_PARTIAL_RE = re.compile(r"^partial/([0-9A-F]{8})/([0-9A-F]{24})_([0-9A-F]{16})_"
                         r"(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]{64})\.zst$")
_MARK_RE = re.compile(r"^marks/(\d{8}T\d{6}\.\d{6}Z)_([0-9A-F]{8})_([0-9A-F]{16})\.json$")
_BASELINE_RE = re.compile(
    r"^baselines/(\d{8}T\d{6}\.\d{6}Z)_([0-9A-F]{8})_([0-9A-F]{16})_(mark|backup)\.json\.zst$")
_RESTORE_POINT_RE = re.compile(
    r"^restore-points/(\d{8}T\d{6}\.\d{6}Z)_([0-9A-F]{8})_([0-9A-F]{16})_([^/]+)\.json$")
_BACKUP_RE = re.compile(r"^backups/([^/]+)/(.+)$")
# SQL Server keeps each backup's baseline inside the backup's own prefix, so it is
# deleted with the backup it was read after.
BASELINE_NAME = "baseline.json.zst"
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"


def instance_prefix(instance: str) -> str:
    return f"{instance}/"


def catalog_prefixes(instance: str, marks: bool = True) -> list[str]:
    """What a catalog lists: backups, WAL, follow mode's partials, timeline histories and
    (unless MARKS is off) the marks, with the drill baselines and named restore points
    that are kept beside them.  Drill and verify records, and the drills' evidence, are
    never part of it."""
    parts = ["backups", "partial", "timelines", "wal"]
    if marks:
        parts += ["baselines", "marks", "restore-points"]
    return [f"{instance}/{part}/" for part in sorted(parts)]


def backup_prefix(instance: str, backup_id: str) -> str:
    return f"{instance}/backups/{backup_id}/"


def backup_object(instance: str, backup_id: str, name: str) -> str:
    return f"{instance}/backups/{backup_id}/{name}"


def manifest_key(instance: str, backup_id: str) -> str:
    return backup_object(instance, backup_id, MANIFEST_NAME)


def wal_key(instance: str, timeline: int, segment: str, sha256: str) -> str:
    return f"{instance}/wal/{timeline:08X}/{segment}-{sha256}.zst"


def partial_key(instance: str, timeline: int, segment: str, end_lsn: int, when: datetime,
                sha256: str) -> str:
    stamp = when.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{instance}/partial/{timeline:08X}/{segment}_{end_lsn:016X}_{stamp}-{sha256}.zst"


def partial_prefix(instance: str) -> str:
    return f"{instance}/partial/"


def follow_status_key(instance: str) -> str:
    return f"{instance}/follow/status.json"


def history_key(instance: str, timeline: int, sha256: str) -> str:
    return f"{instance}/timelines/{timeline:08X}.history-{sha256}"


def mark_key(instance: str, when: datetime, timeline: int, lsn: int) -> str:
    stamp = when.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{instance}/marks/{stamp}_{timeline:08X}_{lsn:016X}.json"


def baseline_key(instance: str, when: datetime, timeline: int, lsn: int, origin: str) -> str:
    """The baseline read right after a mark or a backup, named after it."""
    if origin not in ("mark", "backup"):
        raise ValueError(f"baseline origin must be mark or backup, not {origin!r}")
    stamp = when.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{instance}/baselines/{stamp}_{timeline:08X}_{lsn:016X}_{origin}.json.zst"


def baselines_prefix(instance: str) -> str:
    return f"{instance}/baselines/"
def restore_point_key(instance: str, when: datetime, timeline: int, lsn: int, name: str) -> str:
    """The name travels in the key (percent-encoded), so a listing alone tells every point."""
    stamp = when.astimezone(UTC).strftime(_TIME_FORMAT)
    return (f"{instance}/restore-points/{stamp}_{timeline:08X}_{lsn:016X}_"
            f"{quote(name, safe='')}.json")


def capabilities_key(instance: str) -> str:
    """What the instance's server was found able to do (backup/capabilities.py)."""
    return f"{instance}/capabilities.json"


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
class PartialEntry:
    """The segment in progress, as read at `time`: valid WAL up to at least `end_lsn`."""

    key: str
    timeline: int
    segment: str
    end_lsn: int
    time: datetime
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
class BaselineEntry:
    """A stored baseline; time, timeline and LSN are those of its mark or backup."""

    key: str
    time: datetime
    timeline: int
    lsn: int
    origin: str  # "mark" | "backup"


@dataclass(frozen=True)
class RestorePointEntry:
    key: str
    name: str
    time: datetime
    timeline: int
    lsn: int


@dataclass(frozen=True)
class BackupObjectEntry:
    key: str
    backup_id: str
    name: str
    size: int


ParsedKey = (WalEntry | PartialEntry | HistoryEntry | MarkEntry | RestorePointEntry
             | BaselineEntry | BackupObjectEntry | None)


def parse_key(instance: str, key: str, size: int) -> ParsedKey:
    """Classify one listed key; None for anything pitrflow did not write."""
    prefix = instance_prefix(instance)
    if not key.startswith(prefix):
        return None
    rel = key[len(prefix):]
    if match := _WAL_RE.match(rel):
        return WalEntry(key, int(match.group(1), 16), match.group(2), match.group(3), size)
    if match := _PARTIAL_RE.match(rel):
        when = datetime.strptime(match.group(4), _TIME_FORMAT).replace(tzinfo=UTC)
        return PartialEntry(key, int(match.group(1), 16), match.group(2),
                            int(match.group(3), 16), when, match.group(5), size)
    if match := _HISTORY_RE.match(rel):
        return HistoryEntry(key, int(match.group(1), 16), match.group(2))
    if match := _MARK_RE.match(rel):
        when = datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=UTC)
        return MarkEntry(key, when, int(match.group(2), 16), int(match.group(3), 16))
    if match := _BASELINE_RE.match(rel):
        when = datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=UTC)
        return BaselineEntry(key, when, int(match.group(2), 16), int(match.group(3), 16),
                             match.group(4))
    if match := _RESTORE_POINT_RE.match(rel):
        when = datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=UTC)
        return RestorePointEntry(key, unquote(match.group(4)), when, int(match.group(2), 16),
                                 int(match.group(3), 16))
    if match := _BACKUP_RE.match(rel):
        return BackupObjectEntry(key, match.group(1), match.group(2), size)
    return None
