from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from flows._limits import datadir_lock
from pitrflow.restore.planner import RestoreTarget
from tasks.restore import check_restore_target, make_restore_plan, restore_instance


@flow(name="restore_to_point")
def restore_to_point(
    instance: str,
    pgdata: str,
    target_time: datetime | None = None,
    port: int | None = None,
    dry_run: bool = False,
    config_path: str | None = None,
    scratch: bool = False,
) -> dict[str, Any]:
    """Restore INSTANCE into PGDATA as of TARGET_TIME (timezone-aware; empty = latest mark).

    `scratch` (used by the recovery drill) trusts the restored instance's
    private socket directory so the checks can connect as its superuser.
    """
    RestoreTarget(target_time)  # refuses a naive time before any task runs
    plan = make_restore_plan(instance, target_time, config_path)
    with datadir_lock(pgdata, writes=not (dry_run or scratch)):
        checked = check_restore_target(plan, instance, pgdata, port, config_path)
        if dry_run:
            return {"dry_run": True, **checked}
        return restore_instance(plan, instance, pgdata, port, config_path, scratch)
