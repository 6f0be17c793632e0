"""Choose the SQL Server backups that restore a database to a target.

Pure: recorded msdb rows in, a plan (with the reasons for each choice) out, or a
refusal naming the backup set, stripe or LSN gap that makes the restore impossible.

Which backups connect is decided on LSNs alone: msdb times are server-local, move
with daylight saving and clock changes, and logs may run while a full is running.
The target decides where the chain ends: a time (compared in UTC), an LSN or a
marked transaction (the log backup holding that LSN ends it), the latest log, or
``immediate``, the end of the newest full or differential with no log at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.sqlserver.backup_sets import (
    BackupSet,
    group_backup_sets,
    is_differential_of,
    is_restore_base,
    normal_guid,
    require_restorable,
    set_name,
    utc_text,
)
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import (
    RESTORABLE_DEVICES,
    BackupSetRow,
    MarkRow,
    time_zone_offset,
    utc_to_local,
)
from pitrflow.engines.sqlserver.plan import (
    RestoreStep,
    SqlServerRestorePlan,
    TargetKind,
    step_of,
)
from pitrflow.engines.sqlserver.targets import (
    choose_mark,
    describe_mark,
    parse_lsn,
    refuse_unsupported,
)

__all__ = ["RestoreStep", "SqlServerRestorePlan", "is_differential_of", "is_restore_base",
           "plan_restore", "plan_restore_to"]

@dataclass(frozen=True)
class _Goal:
    """Where the chain ends, and how refusals name it (``what``)."""

    kind: Literal["latest", "time", "lsn", "immediate"]
    time: datetime | None = None
    lsn: int | None = None
    what: str = ""

    def admits(self, backup: BackupSet) -> bool:
        """Whether a full or differential ends early enough to start the chain."""
        if self.kind == "time":
            assert self.time is not None
            return backup.finish <= self.time
        if self.kind == "lsn":
            assert self.lsn is not None
            return backup.head.last_lsn <= self.lsn
        return True

    def ends_in(self, log: BackupSet) -> bool:
        """Whether the chain stops inside (or at the end of) this log backup."""
        if self.kind == "time":
            assert self.time is not None
            return log.finish >= self.time
        if self.kind == "lsn":
            assert self.lsn is not None
            return log.head.last_lsn > self.lsn
        return False


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
    if target is None:
        return _plan(rows, _Goal("latest"), recovery_fork, stopat_time_zone)
    return _plan(rows, _Goal("time", time=target.astimezone(UTC)), recovery_fork,
                 stopat_time_zone)


def plan_restore_to(
    rows: Sequence[BackupSetRow],
    target: RestoreTarget,
    marks: Mapping[int, Sequence[MarkRow]] | None = None,
    recovery_fork: str | None = None,
    stopat_time_zone: int | None = None,
) -> SqlServerRestorePlan:
    """Plan a restore to any target SQL Server can stop at; the others are refused.

    An LSN target ends the chain at the log backup holding it (first LSN <= target <
    last LSN); a name target is the recorded mark of that name (``marks``: each log
    backup's ``backup_set_id`` to the logmarkhistory rows stored with it), planned by
    its LSN; ``immediate`` restores the newest full and its newest differential and
    recovers there, with no log backup.
    """
    refuse_unsupported(target)
    kind = target.kind
    if kind in ("time", "latest"):
        return plan_restore(rows, target.time, recovery_fork, stopat_time_zone)
    if kind == "immediate":
        return _plan(rows, _Goal("immediate"), recovery_fork, None, target_kind="immediate")
    if kind == "lsn":
        assert target.lsn is not None
        lsn = parse_lsn(target.lsn)
        return _plan(rows, _Goal("lsn", lsn=lsn, what=f"LSN {lsn}"), recovery_fork, None,
                     target_kind="lsn", exclusive=target.exclusive)
    assert target.name is not None
    sets = group_backup_sets(rows)
    fork = None if recovery_fork is None else normal_guid(recovery_fork)
    chosen = choose_mark(marks or {}, target.name, sets, fork)
    mark = chosen.mark
    plan = _plan(rows, _Goal("lsn", lsn=mark.lsn, what=describe_mark(mark)),
                 chosen.log.head.recovery_fork_guid, None, target_kind="name",
                 exclusive=target.exclusive, reasons=list(chosen.reasons))
    return replace(plan, mark=mark, mark_after_local=chosen.after_local)


def _plan(
    rows: Sequence[BackupSetRow],
    goal: _Goal,
    recovery_fork: str | None,
    stopat_time_zone: int | None,
    target_kind: TargetKind | None = None,
    exclusive: bool = False,
    reasons: list[str] | None = None,
) -> SqlServerRestorePlan:
    sets = group_backup_sets(rows)
    database = sets[0].head.database_name
    fork = _choose_fork(sets, recovery_fork)
    in_fork = [s for s in sets if s.head.recovery_fork_guid == fork]
    reasons = list(reasons or [])

    full = _choose_full(sets, in_fork, goal, database, fork, reasons)
    differential = _choose_differential(in_fork, full, goal, reasons)
    anchor = differential or full
    if goal.kind == "immediate":
        logs: list[BackupSet] = []
        reasons.append(f"immediate: recovered at the end of {set_name(anchor)} (LSN "
                       f"{anchor.head.last_lsn}, finished {utc_text(anchor.finish)}); no log "
                       "backup is restored")
    else:
        logs = _choose_logs(in_fork, anchor, goal, reasons)

    stopat_local = None
    zone = None
    if goal.kind == "time":
        assert goal.time is not None
        zone, why = _stopat_zone(logs[-1], stopat_time_zone)
        stopat_local = utc_to_local(goal.time, zone)
        stopat_local = stopat_local.replace(microsecond=stopat_local.microsecond // 1000 * 1000)
        reasons.append(why)
    if goal.kind == "lsn":
        verb = "STOPBEFOREMARK" if exclusive else "STOPATMARK"
        what = "the marked transaction" if target_kind == "name" else "that log record"
        reasons.append(f"{verb} on every log restore: the restore stops "
                       + (f"just before {what}, leaving it out" if exclusive
                          else f"at {what}, including it"))

    for backup in (full, differential, *logs):
        if backup is not None:
            require_restorable(backup)
    return SqlServerRestorePlan(
        database_name=database,
        recovery_fork=fork,
        target_utc=goal.time,
        stopat_local=stopat_local,
        stopat_time_zone=zone,
        full=step_of(full, "full"),
        differential=None if differential is None else step_of(differential, "differential"),
        logs=tuple(step_of(log, "log") for log in logs),
        reasons=tuple(reasons),
        target_kind=target_kind or goal.kind,
        target_lsn=goal.lsn,
        exclusive=exclusive,
    )


def _choose_fork(sets: list[BackupSet], wanted: str | None) -> str | None:
    """The requested fork, or that of the newest backup set (msdb ids only grow)."""
    if wanted is None:
        return max(sets, key=lambda s: s.id).head.recovery_fork_guid
    fork = normal_guid(wanted)
    known = sorted({str(s.head.recovery_fork_guid) for s in sets})
    if fork not in known:
        raise SqlServerPlanError(
            f"no backups recorded in recovery fork {fork}",
            f"recorded forks: {', '.join(known)}",
        )
    return fork


def _is_restore_base(backup: BackupSet) -> bool:
    return is_restore_base(backup.head)


def _choose_full(
    sets: list[BackupSet],
    in_fork: list[BackupSet],
    goal: _Goal,
    database: str,
    fork: str | None,
    reasons: list[str],
) -> BackupSet:
    """Newest non-copy-only full of the fork that ends before the target."""
    fulls = [s for s in in_fork if _is_restore_base(s)]
    eligible = [s for s in fulls if goal.admits(s)]
    if not eligible:
        other_forks = sorted(
            {
                str(s.head.recovery_fork_guid)
                for s in sets
                if _is_restore_base(s)
                and s.head.recovery_fork_guid != fork
                and goal.admits(s)
            }
        )
        if fulls and goal.kind == "time":
            assert goal.time is not None
            earliest = min(fulls, key=lambda s: s.newest_key)
            message = (
                f"no full backup of {database} finished at or before "
                f"{utc_text(goal.time)} in recovery fork {fork}"
            )
            hint = (
                f"the fork's earliest, {set_name(earliest)}, finished "
                f"{utc_text(earliest.finish)}; choose a later target"
            )
        elif fulls and goal.kind == "lsn":
            earliest = min(fulls, key=lambda s: s.head.last_lsn)
            message = (
                f"{goal.what} is before the end of the oldest full backup of {database} "
                f"in recovery fork {fork}: {set_name(earliest)} ends at LSN "
                f"{earliest.head.last_lsn}"
            )
            hint = (
                f"a restore from it stops at LSN {earliest.head.last_lsn} or later; "
                "choose a later target"
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
    if goal.kind == "lsn":
        why = (f"ending at or before the target LSN {goal.lsn} (its last LSN "
               f"{full.head.last_lsn})")
    else:
        why = (f"finished {'by the target' if goal.kind == 'time' else 'in the fork'} "
               f"({utc_text(full.finish)})")
    reasons.append(f"{set_name(full)}: newest non-copy-only full {why}")
    skipped = [
        s.id
        for s in in_fork
        if s.head.type == "D"
        and s.head.is_copy_only
        and s.newest_key > full.newest_key
        and goal.admits(s)
    ]
    if skipped:
        reasons.append(
            f"copy-only full {', '.join(map(str, skipped))} skipped: "
            "a copy-only backup is no differential base"
        )
    return full


def _choose_differential(
    in_fork: list[BackupSet],
    full: BackupSet,
    goal: _Goal,
    reasons: list[str],
) -> BackupSet | None:
    """Newest differential based on this full (by checkpoint LSN and base GUID)."""
    based = [
        s
        for s in in_fork
        if s.head.device_type in RESTORABLE_DEVICES and is_differential_of(s.head, full.head)
    ]
    late = [s for s in based if not goal.admits(s)]
    usable = [s for s in based if s not in late]
    for skipped in late:
        if goal.kind == "lsn":
            reasons.append(f"{set_name(skipped)} skipped: ends at LSN {skipped.head.last_lsn}, "
                           f"after {goal.what}")
        else:
            reasons.append(f"{set_name(skipped)} skipped: finished {utc_text(skipped.finish)}, "
                           "after the target")
    if not usable:
        return None
    differential = max(usable, key=lambda s: s.newest_key)
    reasons.append(
        f"{set_name(differential)}: newest differential based on {set_name(full)} "
        f"(base LSN {full.head.checkpoint_lsn})"
    )
    return differential


def _choose_logs(
    in_fork: list[BackupSet],
    anchor: BackupSet,
    goal: _Goal,
    reasons: list[str],
) -> list[BackupSet]:
    """The unbroken LSN chain from the anchor to the target (or to its end)."""
    logs = [
        s
        for s in in_fork
        if s.head.type == "L"
        and s.head.first_lsn < s.head.last_lsn
        and s.head.last_lsn > anchor.head.last_lsn
    ]
    lsn = anchor.head.last_lsn
    chain: list[BackupSet] = []
    previous = anchor
    while True:  # ends: every step moves ``lsn`` strictly forward
        if chain:
            candidates = [s for s in logs if s.head.first_lsn == lsn < s.head.last_lsn]
        else:
            candidates = [s for s in logs if s.head.first_lsn <= lsn < s.head.last_lsn]
        if not candidates:
            _refuse_chain_end(logs, previous, lsn, goal)
            break
        log = min(
            candidates,
            key=lambda s: (s.head.is_copy_only, s.head.device_type not in RESTORABLE_DEVICES,
                           s.id),
        )
        chain.append(log)
        if goal.ends_in(log):
            _refuse_bulk_logged(log, previous, goal)
            lsn = log.head.last_lsn
            break
        previous, lsn = log, log.head.last_lsn
    if chain:
        reasons.append(
            f"log backups {', '.join(str(s.id) for s in chain)}: unbroken LSN "
            f"chain from {anchor.head.last_lsn} to {chain[-1].head.last_lsn}"
        )
        if goal.kind == "lsn":
            last = chain[-1]
            reasons.append(f"{goal.what} is in {set_name(last)} (LSN {last.head.first_lsn} to "
                           f"{last.head.last_lsn}, finished {utc_text(last.finish)})")
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
    logs: list[BackupSet], previous: BackupSet, lsn: int, goal: _Goal
) -> None:
    """The chain ran out: a gap if later logs exist, else too late a target, else done."""
    later = [s for s in logs if s.head.last_lsn > lsn]
    if later:
        after = min(later, key=lambda s: (s.head.first_lsn, s.id))
        hint_target = (f"an LSN before {lsn}" if goal.kind == "lsn"
                       else f"a target at or before {utc_text(previous.finish)}")
        raise SqlServerPlanError(
            f"log chain broken between LSN {lsn} (end of {set_name(previous)}, finished "
            f"{utc_text(previous.finish)}) and LSN {after.head.first_lsn} (start of "
            f"{set_name(after)}, finished {utc_text(after.finish)})",
            f"no recorded log backup starts at LSN {lsn} (taken on another availability "
            "group replica, by another tool, or its history deleted); find it, restore "
            f"to {hint_target}, or take a new full backup",
        )
    if goal.kind == "time":
        assert goal.time is not None
        where = (
            f"the last {set_name(previous)} finished ({utc_text(previous.finish)})"
            if previous.head.type == "L"
            else f"{set_name(previous)} finished ({utc_text(previous.finish)}) and no log "
            "backup follows it"
        )
        raise SqlServerPlanError(
            f"target {utc_text(goal.time)} is after {where}",
            "take a log backup (BACKUP LOG) and plan again, or choose a target at or "
            f"before {utc_text(previous.finish)}",
        )
    if goal.kind == "lsn":
        where = (f"at or after the end of the newest log backup ({set_name(previous)} ends "
                 f"at LSN {lsn})" if previous.head.type == "L"
                 else f"after {set_name(previous)} (last LSN {lsn}) and no log backup "
                 "follows it")
        raise SqlServerPlanError(
            f"{goal.what} is {where}",
            "take a log backup (BACKUP LOG, or pitr ship) and plan again, or choose an LSN "
            f"before {lsn}",
        )


def _refuse_bulk_logged(log: BackupSet, previous: BackupSet, goal: _Goal) -> None:
    """SQL Server cannot stop inside a log backup that holds minimally logged changes."""
    if not log.head.has_bulk_logged_data:
        return
    if goal.kind == "lsn":
        raise SqlServerPlanError(
            f"{goal.what} falls inside {set_name(log)} (LSN {log.head.first_lsn} to "
            f"{log.head.last_lsn}), which holds bulk-logged changes",
            "a restore cannot stop inside a bulk-logged log backup; choose a target before "
            f"LSN {log.head.first_lsn} or at or after LSN {log.head.last_lsn}",
        )
    assert goal.time is not None
    if goal.time >= log.finish:
        return
    earlier = (f"at or before {utc_text(previous.finish)} or "
               if previous.head.type == "L" else "")
    raise SqlServerPlanError(
        f"target {utc_text(goal.time)} falls inside {set_name(log)} ({utc_text(log.start)} to "
        f"{utc_text(log.finish)}), which holds bulk-logged changes",
        "point-in-time restore cannot stop inside a bulk-logged log backup; choose a "
        f"target {earlier}at or after {utc_text(log.finish)}",
    )


def _stopat_zone(last_log: BackupSet, wanted: int | None) -> tuple[int, str]:
    """The offset STOPAT is written in, checked, and the reason for it."""
    if wanted is not None:
        zone, source = wanted, "given"
    else:
        zone, source = last_log.head.time_zone, f"of {set_name(last_log)}"
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
