from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from flows._limits import datadir_lock
from pitrflow.engines.postgres.restore.planner import RestoreTarget
from pitrflow.errors import UsageError
from tasks.restore import (
    check_restore_target,
    instance_engine,
    make_restore_plan,
    restore_instance,
    restore_sqlserver_database,
)


@flow(name="restore_to_point")
def restore_to_point(
    instance: str,
    pgdata: str = "",
    target_time: datetime | None = None,
    port: int | None = None,
    dry_run: bool = False,
    config_path: str | None = None,
    scratch: bool = False,
    database_name: str | None = None,
    replace: bool = False,
    delta: bool = False,
    delta_trust_mtime: bool = False,
) -> dict[str, Any]:
    """Restore INSTANCE as of TARGET_TIME (timezone-aware; empty = the newest mark).

    PostgreSQL: into PGDATA, a new or empty directory.  SQL Server: as
    DATABASE_NAME (default: a new name); `replace` allows overwriting it.
    `scratch` (used by the recovery drill) trusts the restored instance's
    private socket directory so the checks can connect as its superuser.
    """
    RestoreTarget(target_time)  # refuses a naive time before any task runs
    if instance_engine(instance, config_path) == "sqlserver":
        return restore_sqlserver_database(instance, target_time, database_name, replace,
                                          dry_run, config_path)
    if not pgdata:
        raise UsageError("a PostgreSQL restore needs pgdata, a new or empty directory",
                         "set the pgdata parameter")
    plan = make_restore_plan(instance, target_time, config_path)
    with datadir_lock(pgdata, writes=not (dry_run or scratch)):
        checked = check_restore_target(plan, instance, pgdata, port, config_path, delta,
                                       delta_trust_mtime)
        if dry_run:
            return {"dry_run": True, **checked}
        return restore_instance(plan, instance, pgdata, port, config_path, scratch, delta,
                                delta_trust_mtime)
