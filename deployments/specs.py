"""The schedule database teams ask for, in one table.

Everything that knows a flow's entrypoint, cron or interval reads it from
here, so the generated prefect.yaml and the "nothing happened for too long"
alerts cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

DEFAULT_POOL = "pitrflow"
DEFAULT_TIMEZONE = "UTC"
STRICT_ENV = {"PITRFLOW_CONCURRENCY": "strict"}


@dataclass(frozen=True)
class FlowSpec:
    """One flow, deployed once per instance under the instance's name."""

    flow: str
    entrypoint: str
    cron: str | None
    description: str


FULL = FlowSpec("backup_full", "flows/backup_full.py:backup_full", "0 0 * * *",
                "Full base backup at midnight; incrementals build on it.")
# 00:00 is left out: the full runs then, and a second backup would only queue behind it.
INCREMENTAL = FlowSpec("backup_incremental", "flows/backup_incremental.py:backup_incremental",
                       "0 6,12,18 * * *",
                       "Incremental every 6 hours (PostgreSQL 17+; else a full, and it says why).")
SHIP = FlowSpec("ship_logs", "flows/ship_logs.py:ship_logs", "*/15 * * * *",
                "Ship WAL and record a mark: the newest point a restore can reach.")
# After the midnight full has finished on most databases, before the working day.
DRILL = FlowSpec("recovery_drill", "flows/recovery_drill.py:recovery_drill", "30 2 * * *",
                 "Restore a random point to a scratch instance, check it; failures are loud.")
RESTORE = FlowSpec("restore_to_point", "flows/restore_to_point.py:restore_to_point", None,
                   "Ad hoc: target_time (with a time zone), an empty pgdata; dry_run first.")

EXPIRE = FlowSpec("expire", "flows/expire.py:expire", "0 1 * * *",
                  "Apply the retention policy (the backup flows also expire after each backup).")
VERIFY = FlowSpec("verify", "flows/verify.py:verify", "0 4 * * 0",
                  "Weekly: re-read backups against SHA-256, check the WAL or log chain.")
CHECK = FlowSpec("check", "flows/check.py:check", "5 * * * *",
                 "Hourly: server, slot, repository, ages of backups, marks and drills.")

FLOWS: tuple[FlowSpec, ...] = (FULL, INCREMENTAL, SHIP, DRILL, RESTORE, EXPIRE, VERIFY, CHECK)
# Follow mode (instances with follow = true): one long-running run streams WAL.  The schedule
# is a watchdog: with one concurrent run allowed and new runs cancelled, it only starts a
# follower when none is running (after a crash, a cancel or a worker restart).
FOLLOW = FlowSpec("follow_wal", "flows/follow_wal.py:follow_wal", "*/5 * * * *",
                  "Follow mode: stream WAL continuously (runs until cancelled).")
FOLLOW_CONCURRENCY = {"limit": 1, "collision_strategy": "CANCEL_NEW"}
BACKUP_FLOWS = (FULL.flow, INCREMENTAL.flow)

# How often a success is expected; the silence alerts are derived from these.
SHIP_INTERVAL = timedelta(minutes=15)
BACKUP_INTERVAL = timedelta(hours=6)
