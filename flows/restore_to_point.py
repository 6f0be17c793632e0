from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from flows._limits import destination_lock
from pitrflow.engines.base import RestoreDestination, RestoreTarget
from tasks.restore import make_restore_plan, restore_instance


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
) -> dict[str, Any]:
    """Restore INSTANCE as of TARGET_TIME (timezone-aware; empty = the newest point).

    PostgreSQL: into PGDATA, a new or empty directory, served on PORT (default:
    a free one).  SQL Server: as DATABASE_NAME (default: a new name); `replace`
    allows overwriting it.  `dry_run` plans and checks only.  `scratch` (used by
    the recovery drill) marks a throwaway copy its checks may reach as superuser.
    """
    target = RestoreTarget(target_time)  # refuses a naive time before any task runs
    destination = RestoreDestination(pgdata=pgdata, port=port, database_name=database_name,
                                     replace=replace, scratch=scratch)
    plan = make_restore_plan(instance, target, destination, config_path)
    if dry_run:
        return {"dry_run": True, **plan.data}
    with destination_lock(plan.lock, writes=not scratch):
        return restore_instance(plan, config_path)
