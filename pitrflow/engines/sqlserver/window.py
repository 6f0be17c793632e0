"""The stretches of time a SQL Server restore can reach, found with the pure planner.

Shared by ``pitr info`` (what the repository can restore, gaps included) and the
random drill (which draws from those moments only).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pitrflow.engines.sqlserver.catalog import SqlServerCatalog, require_database
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import BackupSetRow, row_times_utc
from pitrflow.engines.sqlserver.planner import is_restore_base, plan_restore

_TICK = timedelta(milliseconds=1)


def _reach(rows: list[BackupSetRow], fork: str | None, start: datetime,
           bound: datetime) -> datetime | None:
    """The last moment in [start, bound] a restore reaches (a chain only ever breaks
    forward), or None when not even ``start`` can be restored."""
    def plans(moment: datetime) -> bool:
        try:
            plan_restore(rows, moment, recovery_fork=fork)
        except SqlServerPlanError:
            return False
        return True

    if not plans(start):
        return None
    low, high = start, bound
    if plans(high):
        return high
    while high - low > _TICK:  # about 40 plans for a week at millisecond resolution
        middle = low + (high - low) / 2
        low, high = (middle, high) if plans(middle) else (low, middle)
    return low


def restorable_spans(catalog: SqlServerCatalog,
                     database: str) -> list[tuple[datetime, datetime]]:
    """The stretches of time (UTC) a restore of ``database`` can reach.

    Within the recovery fork a latest restore follows, each full covers the time from
    its finish to the next full's, as far as its chain of differentials and logs
    reaches; a week without log backups, say, leaves a gap between two spans.
    """
    rows = require_database(catalog, database)
    fork = plan_restore(rows, None).recovery_fork
    in_fork = [r for r in catalog.records if r.database == database
               and r.rows[0].recovery_fork_guid == fork]
    end = max(row_times_utc(r.rows[0])[1] for r in in_fork)
    starts = sorted({row_times_utc(r.rows[0])[1] for r in in_fork if is_restore_base(r.rows[0])})
    spans = []
    for index, start in enumerate(starts):
        bound = starts[index + 1] - _TICK if index + 1 < len(starts) else end
        reach = _reach(rows, fork, start, max(start, bound))
        if reach is None:
            continue
        if spans and start - spans[-1][1] <= 2 * _TICK:  # the next full carries on
            spans[-1] = (spans[-1][0], reach)
        else:
            spans.append((start, reach))
    return spans
