"""Choose the SQL Server backups that restore a database to a point in time.

Pure: recorded msdb rows in, a plan (with the reasons for each choice) out, or a
refusal naming the backup set, stripe or LSN gap that makes the restore impossible.

Which backups connect is decided on LSNs alone: msdb times are server-local, move
with daylight saving and clock changes, and logs may run while a full is running.
Times only decide where the chain ends, and are compared in UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import (
    RESTORABLE_DEVICES,
    BackupSetRow,
    row_times_utc,
    time_zone_offset,
    utc_to_local,
)

StepKind = Literal["full", "differential", "log"]


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

    ``stopat_local`` is the target as a naive time on a server whose offset is
    ``stopat_time_zone`` (msdb units); both are ``None`` when restoring to the latest.
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

    @property
    def steps(self) -> tuple[RestoreStep, ...]:
        """Full, differential if any, then logs: the order they must be restored in."""
        head = (self.full,) if self.differential is None else (self.full, self.differential)
        return head + self.logs


@dataclass(frozen=True)
class _BackupSet:
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


_KIND_NAMES = {"D": "full backup", "I": "differential backup", "L": "log backup"}


def _name(backup: _BackupSet) -> str:
    return f"{_KIND_NAMES[backup.head.type]} {backup.id}"


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def plan_restore(
    rows: Sequence[BackupSetRow],
    target: datetime | None,
    recovery_fork: str | None = None,
    stopat_time_zone: int | None = None,
) -> SqlServerRestorePlan:
    """Plan a restore of one database to ``target`` (aware), or to the latest if ``None``.

    ``recovery_fork`` restricts the plan to one fork; by default the fork of the most
    recently recorded backup.  ``stopat_time_zone`` (msdb units) is the offset STOPAT
    is written in; by default that of the last log restored, the row nearest the
    target, because log records carry the source server's local clock.
    """
    if target is not None and target.utcoffset() is None:
        raise SqlServerPlanError(
            f"target {target.isoformat()} has no time zone",
            "give the target with an offset, for example 2024-03-10T00:40:00+01:00",
        )
    target_utc = None if target is None else target.astimezone(UTC)
    sets = _group_backup_sets(rows)
    database = sets[0].head.database_name
    fork = _choose_fork(sets, recovery_fork)
    in_fork = [s for s in sets if s.head.recovery_fork_guid == fork]
    reasons: list[str] = []

    full = _choose_full(sets, in_fork, target_utc, database, fork, reasons)
    differential = _choose_differential(in_fork, full, target_utc, reasons)
    anchor = differential or full
    logs = _choose_logs(in_fork, anchor, target_utc, reasons)

    stopat_local = None
    zone = None
    if target_utc is not None:
        zone, why = _stopat_zone(logs[-1], stopat_time_zone)
        stopat_local = utc_to_local(target_utc, zone)
        stopat_local = stopat_local.replace(microsecond=stopat_local.microsecond // 1000 * 1000)
        reasons.append(why)

    for backup in (full, differential, *logs):
        if backup is not None:
            _require_restorable(backup)
    return SqlServerRestorePlan(
        database_name=database,
        recovery_fork=fork,
        target_utc=target_utc,
        stopat_local=stopat_local,
        stopat_time_zone=zone,
        full=_step(full, "full"),
        differential=None if differential is None else _step(differential, "differential"),
        logs=tuple(_step(log, "log") for log in logs),
        reasons=tuple(reasons),
    )


def _group_backup_sets(rows: Sequence[BackupSetRow]) -> list[_BackupSet]:
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
        if row.type in _KIND_NAMES:
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
        sets.append(_BackupSet(head=head, rows=tuple(set_rows)))
    return sets


def _set_level(row: BackupSetRow) -> BackupSetRow:
    return replace(row, family_sequence_number=0, mirror=0, physical_device_name="", device_type=0)


def _normal_guid(text: str) -> str:
    try:
        return str(uuid.UUID(text)).upper()
    except ValueError as exc:
        raise SqlServerPlanError(
            f"recovery fork {text!r} is not a GUID",
            "use a recovery_fork_guid value from msdb",
        ) from exc


def _choose_fork(sets: list[_BackupSet], wanted: str | None) -> str | None:
    """The requested fork, or that of the newest backup set (msdb ids only grow)."""
    if wanted is None:
        return max(sets, key=lambda s: s.id).head.recovery_fork_guid
    fork = _normal_guid(wanted)
    known = sorted({str(s.head.recovery_fork_guid) for s in sets})
    if fork not in known:
        raise SqlServerPlanError(
            f"no backups recorded in recovery fork {fork}",
            f"recorded forks: {', '.join(known)}",
        )
    return fork


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


def _is_restore_base(backup: _BackupSet) -> bool:
    return is_restore_base(backup.head)


def _choose_full(
    sets: list[_BackupSet],
    in_fork: list[_BackupSet],
    target: datetime | None,
    database: str,
    fork: str | None,
    reasons: list[str],
) -> _BackupSet:
    """Newest non-copy-only full of the fork that finished by the target."""
    fulls = [s for s in in_fork if _is_restore_base(s)]
    eligible = [s for s in fulls if target is None or s.finish <= target]
    if not eligible:
        other_forks = sorted(
            {
                str(s.head.recovery_fork_guid)
                for s in sets
                if _is_restore_base(s)
                and s.head.recovery_fork_guid != fork
                and (target is None or s.finish <= target)
            }
        )
        if fulls and target is not None:
            earliest = min(fulls, key=lambda s: s.newest_key)
            message = (
                f"no full backup of {database} finished at or before "
                f"{_utc(target)} in recovery fork {fork}"
            )
            hint = (
                f"the fork's earliest, {_name(earliest)}, finished "
                f"{_utc(earliest.finish)}; choose a later target"
            )
        else:
            message = f"no restorable full backup of {database} in recovery fork {fork}"
            hint = "take a full backup"
        if other_forks:
            hint += ", or pass recovery_fork to restore along another fork: " + ", ".join(
                other_forks
            )
        raise SqlServerPlanError(message, hint)
    full = max(eligible, key=lambda s: s.newest_key)
    reasons.append(
        f"{_name(full)}: newest non-copy-only full finished "
        f"{'by the target' if target else 'in the fork'} "
        f"({_utc(full.finish)})"
    )
    skipped = [
        s.id
        for s in in_fork
        if s.head.type == "D"
        and s.head.is_copy_only
        and s.newest_key > full.newest_key
        and (target is None or s.finish <= target)
    ]
    if skipped:
        reasons.append(
            f"copy-only full {', '.join(map(str, skipped))} skipped: "
            "a copy-only backup is no differential base"
        )
    return full


def _choose_differential(
    in_fork: list[_BackupSet],
    full: _BackupSet,
    target: datetime | None,
    reasons: list[str],
) -> _BackupSet | None:
    """Newest differential based on this full (by checkpoint LSN and base GUID)."""
    based = [
        s
        for s in in_fork
        if s.head.device_type in RESTORABLE_DEVICES and is_differential_of(s.head, full.head)
    ]
    late = [s for s in based if target is not None and s.finish > target]
    usable = [s for s in based if s not in late]
    for skipped in late:
        reasons.append(
            f"{_name(skipped)} skipped: finished {_utc(skipped.finish)}, after the target"
        )
    if not usable:
        return None
    differential = max(usable, key=lambda s: s.newest_key)
    reasons.append(
        f"{_name(differential)}: newest differential based on {_name(full)} "
        f"(base LSN {full.head.checkpoint_lsn})"
    )
    return differential


def _choose_logs(
    in_fork: list[_BackupSet],
    anchor: _BackupSet,
    target: datetime | None,
    reasons: list[str],
) -> list[_BackupSet]:
    """The unbroken LSN chain from the anchor to the target (or to its end)."""
    logs = [
        s
        for s in in_fork
        if s.head.type == "L"
        and s.head.first_lsn < s.head.last_lsn
        and s.head.last_lsn > anchor.head.last_lsn
    ]
    lsn = anchor.head.last_lsn
    chain: list[_BackupSet] = []
    previous = anchor
    while True:  # ends: every step moves ``lsn`` strictly forward
        if chain:
            candidates = [s for s in logs if s.head.first_lsn == lsn < s.head.last_lsn]
        else:
            candidates = [s for s in logs if s.head.first_lsn <= lsn < s.head.last_lsn]
        if not candidates:
            _refuse_chain_end(logs, previous, lsn, target)
            break
        log = min(
            candidates,
            key=lambda s: (s.head.is_copy_only, s.head.device_type not in RESTORABLE_DEVICES,
                           s.id),
        )
        chain.append(log)
        if target is not None and log.finish >= target:
            _refuse_bulk_logged(log, previous, target)
            lsn = log.head.last_lsn
            break
        previous, lsn = log, log.head.last_lsn
    if chain:
        reasons.append(
            f"log backups {', '.join(str(s.id) for s in chain)}: unbroken LSN "
            f"chain from {anchor.head.last_lsn} to {chain[-1].head.last_lsn}"
        )
    empty = [
        s.id
        for s in in_fork
        if s.head.type == "L"
        and s.head.first_lsn == s.head.last_lsn
        and anchor.head.last_lsn <= s.head.last_lsn < lsn
    ]
    if empty:
        reasons.append(
            f"empty log backup {', '.join(map(str, empty))} skipped (first LSN = last LSN)"
        )
    return chain


def _refuse_chain_end(
    logs: list[_BackupSet], previous: _BackupSet, lsn: int, target: datetime | None
) -> None:
    """The chain ran out: a gap if later logs exist, else too late a target, else done."""
    later = [s for s in logs if s.head.last_lsn > lsn]
    if later:
        after = min(later, key=lambda s: (s.head.first_lsn, s.id))
        raise SqlServerPlanError(
            f"log chain broken between LSN {lsn} (end of {_name(previous)}, finished "
            f"{_utc(previous.finish)}) and LSN {after.head.first_lsn} (start of "
            f"{_name(after)}, finished {_utc(after.finish)})",
            f"no recorded log backup starts at LSN {lsn} (taken on another availability "
            "group replica, by another tool, or its history deleted); find it, restore "
            f"to a target at or before {_utc(previous.finish)}, or take a new full backup",
        )
    if target is not None:
        where = (
            f"the last {_name(previous)} finished ({_utc(previous.finish)})"
            if previous.head.type == "L"
            else f"{_name(previous)} finished ({_utc(previous.finish)}) and no log "
            "backup follows it"
        )
        raise SqlServerPlanError(
            f"target {_utc(target)} is after {where}",
            "take a log backup (BACKUP LOG) and plan again, or choose a target at or "
            f"before {_utc(previous.finish)}",
        )


def _refuse_bulk_logged(log: _BackupSet, previous: _BackupSet, target: datetime) -> None:
    """SQL Server cannot stop inside a log backup that holds minimally logged changes."""
    if not log.head.has_bulk_logged_data or target >= log.finish:
        return
    earlier = f"at or before {_utc(previous.finish)} or " if previous.head.type == "L" else ""
    raise SqlServerPlanError(
        f"target {_utc(target)} falls inside {_name(log)} ({_utc(log.start)} to "
        f"{_utc(log.finish)}), which holds bulk-logged changes",
        "point-in-time restore cannot stop inside a bulk-logged log backup; choose a "
        f"target {earlier}at or after {_utc(log.finish)}",
    )


def _stopat_zone(last_log: _BackupSet, wanted: int | None) -> tuple[int, str]:
    """The offset STOPAT is written in, checked, and the reason for it."""
    if wanted is not None:
        zone, source = wanted, "given"
    else:
        zone, source = last_log.head.time_zone, f"of {_name(last_log)}"
    try:
        offset = time_zone_offset(zone)
    except SqlServerPlanError as exc:
        raise SqlServerPlanError(
            f"cannot write STOPAT: {exc.message} ({source})",
            "pass stopat_time_zone, the server's offset in 15-minute intervals",
        ) from exc
    hours, minutes = divmod(abs(int(offset.total_seconds())) // 60, 60)
    sign = "-" if offset.total_seconds() < 0 else "+"
    return (
        zone,
        f"STOPAT in server local time UTC{sign}{hours:02d}:{minutes:02d} "
        f"(time_zone {zone} {source})",
    )


def _require_restorable(backup: _BackupSet) -> None:
    """Every stripe present on disk: RESTORE needs all families of one mirror."""
    head = backup.head
    devices = sorted({row.device_type for row in backup.rows if row.mirror == 0}
                     - RESTORABLE_DEVICES)
    if devices:
        raise SqlServerPlanError(
            f"{_name(backup)} was not written to disk files or URLs (device type {devices[0]})",
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
                f"{_name(backup)} is missing stripe {family} of {head.family_count} "
                f"(media set {head.media_set_id})",
                hint,
            )
    for row in primary.values():
        if row.physical_device_name.strip().upper() == "NUL":
            raise SqlServerPlanError(
                f"{_name(backup)} was written to NUL and discarded",
                "the log chain is broken there; restore to a target before it, or "
                "take a new full backup",
            )


def _step(backup: _BackupSet, kind: StepKind) -> RestoreStep:
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
