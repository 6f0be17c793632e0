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
    target_xid: int | None = None,
    target_lsn: str | None = None,
    target_name: str | None = None,
    immediate: bool = False,
    exclusive: bool = False,
    target_timeline: str | None = None,
    standby: bool = False,
    primary_conninfo: str | None = None,
    delta: bool = False,
    delta_trust_mtime: bool = False,
) -> dict[str, Any]:
    """Restore INSTANCE to a target: TARGET_TIME (timezone-aware), or TARGET_XID,
    TARGET_LSN, TARGET_NAME (a restore point; SQL Server: a mark), or `immediate` (the
    end of the backup); none of them = the newest point.  `exclusive` stops just before
    the target; TARGET_TIMELINE (PostgreSQL) is latest, current or a number.

    PostgreSQL: into PGDATA, a new or empty directory, served on PORT (default:
    a free one); `standby` restores a standby that follows the repository and
    streams from PRIMARY_CONNINFO (empty: the instance itself; "off": no streaming;
    the password comes from the instance's password_env or password_block).  SQL
    Server: as DATABASE_NAME (default: a new name); `replace` allows overwriting it.
    `delta` (PostgreSQL) restores into PGDATA when it already holds a data directory of
    the same cluster, with no server running: files that match the backup are kept,
    others rewritten, the rest removed; `delta_trust_mtime` keeps files whose size and
    modification time match without reading them.  `dry_run` plans and checks only.
    `scratch` (used by the recovery drill) marks a throwaway copy its checks may reach
    as superuser.
    """
    # Refuses a naive time, or two targets at once, before any task runs.
    target = RestoreTarget(time=target_time, xid=target_xid, lsn=target_lsn,
                           name=target_name, immediate=immediate, exclusive=exclusive,
                           timeline=target_timeline)
    destination = RestoreDestination(pgdata=pgdata, port=port, database_name=database_name,
                                     replace=replace, scratch=scratch, standby=standby,
                                     primary_conninfo=primary_conninfo or None,
                                     delta=delta, delta_trust_mtime=delta_trust_mtime)
    plan = make_restore_plan(instance, target, destination, config_path)
    if dry_run:
        return {"dry_run": True, **plan.data}
    with destination_lock(plan.lock, writes=not scratch):
        return restore_instance(plan, config_path)
