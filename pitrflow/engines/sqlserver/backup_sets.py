"""msdb's file rows grouped into backup sets, and what makes a set usable in a restore.

msdb records one row per backup file (stripe x mirror); a RESTORE statement takes a
whole backup set.  The planner works on these groups: which set is a full that can
start a chain, which differential is based on which full, and whether every stripe
of a set is there to be read.  Pure: rows in, sets or a refusal out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import RESTORABLE_DEVICES, BackupSetRow, row_times_utc

KIND_NAMES = {"D": "full backup", "I": "differential backup", "L": "log backup"}


@dataclass(frozen=True)
class BackupSet:
    """All recorded files of one backup set; ``head`` carries the set-level columns."""

    head: BackupSetRow
    rows: tuple[BackupSetRow, ...]

    @property
    def id(self) -> int:
        return self.head.backup_set_id

    @property
    def start(self) -> datetime:
        return row_times_utc(self.head)[0]

    @property
    def finish(self) -> datetime:
        return row_times_utc(self.head)[1]

    @property
    def newest_key(self) -> tuple[datetime, int]:
        return self.finish, self.id

    def holds_lsn(self, lsn: int) -> bool:
        """Whether this log backup holds the log record at ``lsn`` (last LSN is the next one's)."""
        return self.head.type == "L" and self.head.first_lsn <= lsn < self.head.last_lsn


def set_name(backup: BackupSet) -> str:
    """``log backup 2003``: how refusals and reasons name a backup set."""
    return f"{KIND_NAMES[backup.head.type]} {backup.id}"


def utc_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def group_backup_sets(rows: Sequence[BackupSetRow]) -> list[BackupSet]:
    """One entry per backup set of types D/I/L, its file rows kept together."""
    if not rows:
        raise SqlServerPlanError(
            "no backup history rows to plan from",
            "read msdb with BACKUP_HISTORY_SQL for the database first",
        )
    names = sorted({row.database_name for row in rows})
    if len(names) > 1:
        raise SqlServerPlanError(
            f"backup history mixes databases: {', '.join(names)}",
            "plan one database at a time",
        )
    grouped: dict[int, list[BackupSetRow]] = {}
    for row in rows:
        if row.type in KIND_NAMES:
            grouped.setdefault(row.backup_set_id, []).append(row)
    if not grouped:
        raise SqlServerPlanError(
            f"no full, differential or log backups recorded for {names[0]}",
            "take a full backup first",
        )
    sets = []
    for set_rows in grouped.values():
        head = min(set_rows, key=lambda r: (r.mirror, r.family_sequence_number))
        set_level = _set_level(head)
        for row in set_rows:
            if _set_level(row) != set_level:
                raise SqlServerPlanError(
                    f"backup set {head.backup_set_id} has file rows that disagree on "
                    "set-level columns",
                    "the recording is inconsistent; record it again from msdb",
                )
        sets.append(BackupSet(head=head, rows=tuple(set_rows)))
    return sets


def _set_level(row: BackupSetRow) -> BackupSetRow:
    return replace(row, family_sequence_number=0, mirror=0, physical_device_name="", device_type=0)


def normal_guid(text: str) -> str:
    try:
        return str(uuid.UUID(text)).upper()
    except ValueError as exc:
        raise SqlServerPlanError(
            f"recovery fork {text!r} is not a GUID",
            "use a recovery_fork_guid value from msdb",
        ) from exc


def is_restore_base(row: BackupSetRow) -> bool:
    """A full that can start a restore chain: not copy-only, written to disk files or URLs."""
    return row.type == "D" and not row.is_copy_only and row.device_type in RESTORABLE_DEVICES


def is_differential_of(differential: BackupSetRow, full: BackupSetRow) -> bool:
    """Whether ``differential`` is based on ``full``: the base checkpoint LSN matches, and
    the base GUID too when both rows record one (older recordings lack it)."""
    return (
        differential.type == "I"
        and differential.differential_base_lsn == full.checkpoint_lsn
        and (
            differential.differential_base_guid is None
            or full.backup_set_uuid is None
            or differential.differential_base_guid == full.backup_set_uuid
        )
    )


def require_restorable(backup: BackupSet) -> None:
    """Every stripe present on disk: RESTORE needs all families of one mirror."""
    head = backup.head
    devices = sorted({row.device_type for row in backup.rows if row.mirror == 0}
                     - RESTORABLE_DEVICES)
    if devices:
        raise SqlServerPlanError(
            f"{set_name(backup)} was not written to disk files or URLs (device type "
            f"{devices[0]})",
            "restore it with the tool that took it, or plan to a target before it",
        )
    primary = {row.family_sequence_number: row for row in backup.rows if row.mirror == 0}
    for family in range(1, head.family_count + 1):
        if family not in primary:
            mirrors = [
                row.physical_device_name
                for row in backup.rows
                if row.mirror != 0 and row.family_sequence_number == family
            ]
            hint = "a restore needs every stripe of the media set"
            if mirrors:
                hint += f"; a mirror copy is recorded at {mirrors[0]}"
            raise SqlServerPlanError(
                f"{set_name(backup)} is missing stripe {family} of {head.family_count} "
                f"(media set {head.media_set_id})",
                hint,
            )
    for row in primary.values():
        if row.physical_device_name.strip().upper() == "NUL":
            raise SqlServerPlanError(
                f"{set_name(backup)} was written to NUL and discarded",
                "the log chain is broken there; restore to a target before it, or "
                "take a new full backup",
            )
