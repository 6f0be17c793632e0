"""SQL Server's reading of a restore target: an LSN, a marked transaction, or a refusal.

A `RestoreTarget` speaks for every engine.  SQL Server stops a restore at a time
(STOPAT), at a log record (``STOPATMARK = 'lsn:...'``), at a marked transaction
(``STOPATMARK = 'name'``), or, with ``exclusive``, just before the last two
(STOPBEFOREMARK).  A transaction id and a timeline are PostgreSQL's and are refused
in one line; so is an exclusive time, which STOPAT cannot express.

Marks are found in the marks recorded with the log backups (``msdb.dbo.logmarkhistory``
rows, see ``msdb.LOG_MARKS_SQL``).  Mark names need not be unique: the newest recorded
mark of the name is the target (the one its log backup finished last), and when older
marks share the name the T-SQL adds ``AFTER`` its commit time, because RESTORE
otherwise stops at the first mark of that name it replays.  Pure: no server, no disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.sqlserver.backup_sets import BackupSet, set_name
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import MarkRow
from pitrflow.errors import UsageError

_HEX_LSN = re.compile(r"^(?:0x)?([0-9a-f]{1,8}):([0-9a-f]{1,8}):([0-9a-f]{1,4})$", re.IGNORECASE)
_LISTED = 10


def refuse_unsupported(target: RestoreTarget) -> None:
    """Refuse, in one line, the target kinds SQL Server has no RESTORE option for."""
    if target.xid is not None:
        raise UsageError(
            f"SQL Server has no transaction-id target (got transaction {target.xid})",
            "stop at a marked transaction (--target-name, BEGIN TRAN name WITH MARK) or at "
            "an LSN (--target-lsn), or restore to a time (--to)")
    if target.timeline is not None:
        raise UsageError(
            f"a target timeline ({target.timeline}) is PostgreSQL's; SQL Server restores "
            "along one recovery fork",
            "leave --target-timeline out: the plan follows the fork of the newest backup")
    if target.exclusive and target.time is not None:
        raise UsageError(
            "SQL Server's STOPAT has no exclusive form: --exclusive works with an LSN or a "
            "marked transaction",
            "give a time just before the transaction, or --target-lsn / --target-name with "
            "--exclusive (STOPBEFOREMARK)")


def parse_lsn(text: str) -> int:
    """A SQL Server LSN: the decimal msdb shows (``37000000042400001``, optionally
    ``lsn:``-prefixed) or fn_dblog's ``VLF:block:slot`` in hex (``00000025:000001a8:0001``)."""
    value = text.strip()
    if value.lower().startswith("lsn:"):
        value = value[4:]
    if value.isdigit() and int(value) > 0:
        return int(value)
    hexed = _HEX_LSN.match(value)
    if hexed:
        vlf, block, slot = (int(part, 16) for part in hexed.groups())
        if vlf > 0:
            return vlf * 10**15 + block * 10**5 + slot
    raise UsageError(
        f"{text!r} is not a SQL Server LSN",
        "give the decimal LSN msdb and RESTORE HEADERONLY show (e.g. 37000000042400001), "
        "or fn_dblog's hex form 00000025:000001a8:0001")


@dataclass(frozen=True)
class ChosenMark:
    """The mark a name stands for, the log backup that holds it, and the AFTER time
    (server local) that tells it from older marks of the same name, if any."""

    mark: MarkRow
    log: BackupSet
    after_local: datetime | None
    reasons: tuple[str, ...]


def describe_mark(mark: MarkRow) -> str:
    return f"marked transaction {mark.mark_name!r} (LSN {mark.lsn})"


def _local(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="milliseconds")


def choose_mark(marks: Mapping[int, Sequence[MarkRow]], name: str, sets: Sequence[BackupSet],
                recovery_fork: str | None) -> ChosenMark:
    """The newest recorded mark called ``name``, with the log backup it was recorded
    with, or a refusal listing the recorded marks.

    ``marks`` maps a log backup's ``backup_set_id`` to the marks stored with it;
    ``recovery_fork`` (normalized) restricts the search to that fork's log backups.
    """
    database = sets[0].head.database_name
    logs = sorted((s for s in sets if s.head.type == "L"),
                  key=lambda s: (s.head.is_copy_only, s.id))
    recorded = _unique(m for log in logs for m in marks.get(log.id, ())
                       if m.database_name == database)
    named = [m for m in recorded if m.mark_name == name]
    if not named:
        raise SqlServerPlanError(f"no marked transaction {name!r} is recorded for {database}",
                                 _unknown_hint(recorded, name, database))
    placed = [(mark, log) for log in logs for mark in marks.get(log.id, ())
              if mark.mark_name == name and mark.database_name == database
              and log.holds_lsn(mark.lsn)
              and (recovery_fork is None or log.head.recovery_fork_guid == recovery_fork)]
    if not placed:
        where = "" if recovery_fork is None else f" of recovery fork {recovery_fork}"
        raise SqlServerPlanError(
            f"{describe_mark(named[-1])} is recorded, but no log backup{where} holds it",
            "restore along the fork it was recorded in, or to a time instead")
    mark, log = max(placed, key=lambda item: (item[1].finish, item[0].lsn))
    reasons = [f"{describe_mark(mark)}: committed {_local(mark.mark_time)} server local time"
               + (f" by {mark.user_name}" if mark.user_name else "")
               + f", held by {set_name(log)}"]
    older = [m for m in named if m.lsn < mark.lsn]
    after = None
    if older:
        clash = [m for m in older if m.mark_time >= mark.mark_time]
        if clash:
            raise SqlServerPlanError(
                f"marked transaction {name!r} is recorded {len(named)} times and the one at "
                f"LSN {clash[0].lsn} committed no earlier ({_local(clash[0].mark_time)}) than "
                f"the newest at LSN {mark.lsn} ({_local(mark.mark_time)})",
                "RESTORE tells marks of one name apart only by time (AFTER); restore to the "
                f"newest one by its LSN (--target-lsn {mark.lsn}) or to a time (--to)")
        after = mark.mark_time
        reasons.append(
            f"{len(older)} older mark(s) share the name (LSN "
            f"{', '.join(str(m.lsn) for m in older[:_LISTED])}): the newest is the target, "
            f"and AFTER '{_local(mark.mark_time)}' makes RESTORE pass over the older")
    return ChosenMark(mark=mark, log=log, after_local=after, reasons=tuple(reasons))


def _unique(marks: Iterable[MarkRow]) -> list[MarkRow]:
    """Marks by LSN, each once (a mark is stored with every log backup that holds it)."""
    seen: dict[tuple[int, str], MarkRow] = {}
    for mark in marks:
        seen.setdefault((mark.lsn, mark.mark_name), mark)
    return sorted(seen.values(), key=lambda m: m.lsn)


def _unknown_hint(recorded: list[MarkRow], name: str, database: str) -> str:
    if not recorded:
        return (f"no marked transactions are recorded for {database}: a mark is recorded with "
                "the log backup taken after BEGIN TRAN name WITH MARK commits; take a log "
                "backup (pitr ship) and plan again")
    names = sorted({m.mark_name for m in recorded})
    listed = ", ".join(repr(n) for n in names[:_LISTED])
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    hint = f"recorded marks: {listed}{more}"
    near = [n for n in names if n.casefold() == name.casefold()]
    if near:
        hint += f"; mark names are case-sensitive: did you mean {near[0]!r}?"
    return hint
