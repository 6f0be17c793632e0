"""The schedule database teams ask for, in one table, spread over the fleet.

Everything that knows a flow's entrypoint, schedule or interval reads it from
here, so the registered deployments, prefect.yaml and the "nothing happened
for too long" alerts cannot drift apart.

Two hundred instances on the same cron would start two hundred full backups
in the same second: the server, the worker and the storage all take the hit
at once.  So each instance runs its schedule shifted by an offset derived from
its name (a stable hash, the same on every `pitr deploy`), within the spread
the config sets (`[schedules] spread_minutes`, default 60).  Every flow of an
instance is shifted by the same offset, so the order of its day is kept (the
midnight full before the 02:30 drill before the 06:00 incremental); flows that
repeat more often than the spread (ship every 15 minutes, check hourly) take
the offset modulo their period.  Schedules are RFC 5545 rules because cron
cannot say seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

DEFAULT_POOL = "pitrflow"
DEFAULT_TIMEZONE = "UTC"
RESTORE_QUEUE = "restores"
STRICT_ENV = {"PITRFLOW_CONCURRENCY": "strict"}

_HOUR, _DAY, _WEEK = timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@dataclass(frozen=True)
class Cadence:
    """When a flow runs before any offset: at these moments of each `period`.

    `at` is measured from the period's start: midnight for a day, Monday 00:00
    for a week, the full hour for an hour or less.
    """

    period: timedelta
    at: tuple[timedelta, ...] = (timedelta(0),)

    def rrule(self, offset: timedelta = timedelta(0)) -> str:
        """The RRULE of this cadence shifted by OFFSET (taken modulo the period)."""
        shift = offset % self.period
        if self.period <= _HOUR:
            moments = [(shift + at + k * self.period) % _HOUR
                       for at in self.at for k in range(_HOUR // self.period)]
            return "FREQ=HOURLY;" + _by(moments, ("BYMINUTE", "BYSECOND"))
        if self.period == _DAY:
            moments = [(shift + at) % _DAY for at in self.at]
            return "FREQ=DAILY;" + _by(moments, ("BYHOUR", "BYMINUTE", "BYSECOND"))
        if self.period == _WEEK:
            moments = [(shift + at) % _WEEK for at in self.at]
            return "FREQ=WEEKLY;" + _by(moments, ("BYDAY", "BYHOUR", "BYMINUTE", "BYSECOND"))
        raise ValueError(f"no RRULE for a period of {self.period}")


def _by(moments: list[timedelta], parts: tuple[str, ...]) -> str:
    """BY* lists whose product is exactly MOMENTS (all sharing what they do not list)."""
    fields = []
    for moment in moments:
        seconds = int(moment.total_seconds())
        fields.append({"BYDAY": _WEEKDAYS[seconds // 86400], "BYHOUR": seconds // 3600 % 24,
                       "BYMINUTE": seconds // 60 % 60, "BYSECOND": seconds % 60})
    values = {part: sorted({f[part] for f in fields}, key=_WEEKDAYS.index if part == "BYDAY"
                           else None) for part in parts}
    product = 1
    for part in parts:
        product *= len(values[part])
    if product != len(set(moments)):
        raise ValueError(f"moments {moments} are not one RRULE")
    return ";".join(f"{part}={','.join(str(v) for v in values[part])}" for part in parts)


@dataclass(frozen=True)
class FlowSpec:
    """One flow, deployed once per instance under the instance's name."""

    flow: str
    entrypoint: str
    cadence: Cadence | None
    description: str
    work_queue: str | None = None  # None: the pool's default queue
    cancel_overlaps: bool = False  # a run that finds one still running is cancelled


FULL = FlowSpec("backup_full", "flows/backup_full.py:backup_full", Cadence(_DAY),
                "Full base backup at midnight; incrementals build on it.")
# 00:00 is left out: the full runs then, and a second backup would only queue behind it.
INCREMENTAL = FlowSpec("backup_incremental", "flows/backup_incremental.py:backup_incremental",
                       Cadence(_DAY, (timedelta(hours=6), timedelta(hours=12),
                                      timedelta(hours=18))),
                       "Incremental every 6 hours (PostgreSQL 17+; else a full, and it says why).")
# A ship still running when the next is due has the slot and the WAL: the next one
# is cancelled rather than queued behind it (and piling up behind a stuck server).
SHIP = FlowSpec("ship_logs", "flows/ship_logs.py:ship_logs", Cadence(timedelta(minutes=15)),
                "Ship WAL and record a mark: the newest point a restore can reach.",
                cancel_overlaps=True)
# After the midnight full has finished on most databases, before the working day.
DRILL = FlowSpec("recovery_drill", "flows/recovery_drill.py:recovery_drill",
                 Cadence(_DAY, (timedelta(hours=2, minutes=30),)),
                 "Restore a random point to a scratch instance, check it; failures are loud.")
# Restores go to their own queue, first in the pool's priority order: a restore
# someone waits for does not queue behind the night's backups.
RESTORE = FlowSpec("restore_to_point", "flows/restore_to_point.py:restore_to_point", None,
                   "Ad hoc: target_time (with a time zone), an empty pgdata; dry_run first.",
                   work_queue=RESTORE_QUEUE)

EXPIRE = FlowSpec("expire", "flows/expire.py:expire", Cadence(_DAY, (timedelta(hours=1),)),
                  "Apply the retention policy (the backup flows also expire after each backup).")
VERIFY = FlowSpec("verify", "flows/verify.py:verify", Cadence(_WEEK, (timedelta(days=6, hours=4),)),
                  "Weekly: re-read backups against SHA-256, check the WAL or log chain.")
CHECK = FlowSpec("check", "flows/check.py:check", Cadence(_HOUR, (timedelta(minutes=5),)),
                 "Hourly: server, slot, repository, ages of backups, marks and drills.")

FLOWS: tuple[FlowSpec, ...] = (FULL, INCREMENTAL, SHIP, DRILL, RESTORE, EXPIRE, VERIFY, CHECK)
# Follow mode (instances with follow = true): one long-running run streams WAL.  The schedule
# is a watchdog: with one concurrent run allowed and new runs cancelled, it only starts a
# follower when none is running (after a crash, a cancel or a worker restart).
# Follow mode's long-running receiver, for instances with follow = true: the schedule is
# a watchdog that restarts a follower that ended; one that still runs cancels the new run.
FOLLOW = FlowSpec("follow_wal", "flows/follow_wal.py:follow_wal", Cadence(timedelta(minutes=5)),
                  "Follow mode: stream WAL continuously (runs until cancelled).",
                  cancel_overlaps=True)
BACKUP_FLOWS = (FULL.flow, INCREMENTAL.flow)

# How often a success is expected; the silence alerts are derived from these.
SHIP_INTERVAL = SHIP.cadence.period if SHIP.cadence else timedelta(minutes=15)
BACKUP_INTERVAL = timedelta(hours=6)


def instance_offset(instance: str, spread: timedelta) -> timedelta:
    """Where in the spread INSTANCE's schedules fall: from a hash of its name, to the second.

    The same name gives the same offset on every machine and every deploy, so
    registering again changes no schedule.
    """
    seconds = int(spread.total_seconds())
    if seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(instance.encode("utf-8")).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % seconds)
