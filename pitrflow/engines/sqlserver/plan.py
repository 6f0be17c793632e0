"""The plan a SQL Server restore carries out: its steps in order, its target, and why.

``planner`` decides it from msdb rows; ``tsql`` writes it as RESTORE statements;
``render`` shows it.  Kept apart so each of those reads one small module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pitrflow.engines.sqlserver.backup_sets import BackupSet
from pitrflow.engines.sqlserver.msdb import MarkRow

StepKind = Literal["full", "differential", "log"]
TargetKind = Literal["latest", "time", "lsn", "name", "immediate"]


@dataclass(frozen=True)
class RestoreStep:
    """One RESTORE statement's worth: a backup set and every stripe it was written to."""

    kind: StepKind
    backup_set_id: int
    position: int
    files: tuple[str, ...]
    first_lsn: int
    last_lsn: int
    checkpoint_lsn: int
    start_utc: datetime
    finish_utc: datetime
    time_zone: int
    has_bulk_logged_data: bool


@dataclass(frozen=True)
class SqlServerRestorePlan:
    """What to restore, in order, and why.

    ``stopat_local`` is a time target as a naive time on a server whose offset is
    ``stopat_time_zone`` (msdb units); both are ``None`` for other targets.
    ``target_lsn`` is an LSN target, or the LSN of the ``mark`` a name target stands
    for; ``mark_after_local`` is the AFTER time that tells that mark from older ones
    of its name.  ``exclusive`` stops just before the LSN or mark (STOPBEFOREMARK).
    """

    database_name: str
    recovery_fork: str | None
    target_utc: datetime | None
    stopat_local: datetime | None
    stopat_time_zone: int | None
    full: RestoreStep
    differential: RestoreStep | None
    logs: tuple[RestoreStep, ...]
    reasons: tuple[str, ...]
    target_kind: TargetKind = "latest"
    target_lsn: int | None = None
    exclusive: bool = False
    mark: MarkRow | None = None
    mark_after_local: datetime | None = None

    @property
    def steps(self) -> tuple[RestoreStep, ...]:
        """Full, differential if any, then logs: the order they must be restored in."""
        head = (self.full,) if self.differential is None else (self.full, self.differential)
        return head + self.logs


def step_of(backup: BackupSet, kind: StepKind) -> RestoreStep:
    head = backup.head
    primary = sorted(
        (row for row in backup.rows if row.mirror == 0), key=lambda row: row.family_sequence_number
    )
    return RestoreStep(
        kind=kind,
        backup_set_id=head.backup_set_id,
        position=head.position,
        files=tuple(row.physical_device_name for row in primary),
        first_lsn=head.first_lsn,
        last_lsn=head.last_lsn,
        checkpoint_lsn=head.checkpoint_lsn,
        start_utc=backup.start,
        finish_utc=backup.finish,
        time_zone=head.time_zone,
        has_bulk_logged_data=head.has_bulk_logged_data,
    )
