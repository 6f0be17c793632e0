"""Named restore points: `pitr mark INSTANCE --name NAME`.

PostgreSQL's pg_create_restore_point() writes a named record into the WAL; a
recovery with recovery_target_name stops there.  Recording each point in the
repository (its name, time, LSN and timeline in the key, the same sealed in
the record) lets `info` list the names and the planner pick the backup that
precedes a name, or refuse a name never recorded, before anything is touched.
Names are unique per instance: PostgreSQL stops at the first point of a name
it meets, so a reused name would restore to whichever came first.
"""

from __future__ import annotations

import logging

from pitrflow.catalog.records import dump_record
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import sql
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.connection import connect
from pitrflow.engines.postgres.wal.walnames import format_lsn, parse_lsn
from pitrflow.errors import ServerError, UsageError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import RestorePointEntry, parse_key, restore_point_key

log = logging.getLogger("pitrflow.mark")

# PostgreSQL keeps restore point names in MAXFNAMELEN (64) bytes, the terminator included.
MAX_NAME_BYTES = 63


def check_name(name: str) -> str:
    if not name or not name.strip():
        raise UsageError("a restore point needs a name", "pitr mark INSTANCE --name NAME")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"restore point name {name!r} is longer than {MAX_NAME_BYTES} bytes",
                         "PostgreSQL keeps at most 63 bytes of a restore point's name")
    return name


def create_restore_point(instance: InstanceConfig, repo: Repository,
                         name: str) -> RestorePointEntry:
    """Create the point on the server, then record it; refuses a name already recorded."""
    check_name(name)
    existing = read_catalog(repo, instance.name).restore_point(name)
    if existing is not None:
        raise UsageError(
            f"restore point {name!r} of {instance.name} already exists (created "
            f"{existing.time.isoformat()}, LSN {format_lsn(existing.lsn)})",
            "give each restore point a name of its own: recovery stops at the first "
            "point of a name")
    with connect(instance) as conn:
        facts = sql.server_facts(conn)
        if facts.in_recovery:
            raise ServerError(f"instance {instance.name} is a standby",
                              "create restore points on the primary")
        row = conn.execute("SELECT pg_create_restore_point(%s)::text, now()", (name,)
                           ).fetchone()
    assert row is not None
    lsn, when = parse_lsn(row[0]), row[1]
    key = restore_point_key(instance.name, when, facts.timeline, lsn, name)
    repo.put_bytes(key, dump_record("restore-point", {
        "instance": instance.name, "name": name, "time": when.isoformat(),
        "lsn": format_lsn(lsn), "timeline": facts.timeline}))
    log.info("restore point %r of %s at %s (timeline %d)", name, instance.name,
             format_lsn(lsn), facts.timeline)
    entry = parse_key(instance.name, key, 0)
    assert isinstance(entry, RestorePointEntry)
    return entry
