"""`pitr check` for PostgreSQL: the server, its slot, the repository, backups, WAL, drills.

Each check is one line (pitrflow.health.Check); critical failures make the
exit status non-zero.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pitrflow.catalog.verify_records import verify_status
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import sql
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.connection import connect
from pitrflow.engines.postgres.restore.planner import recoverable_window
from pitrflow.engines.postgres.wal.follow_status import follower_health, read_status
from pitrflow.engines.postgres.wal.slots import slot_info
from pitrflow.errors import PitrError
from pitrflow.health import Check, age_text, drill_check, protection_checks
from pitrflow.storage.base import Repository


def _server_checks(instance: InstanceConfig, has_incrementals: bool) -> list[Check]:
    checks: list[Check] = []
    try:
        with connect(instance) as conn:
            facts = sql.server_facts(conn)
            slot = slot_info(conn, instance.slot_name)
            summarize = sql.setting(conn, "summarize_wal") if facts.major >= 17 else None
            sync = (conn.execute(sql.SYNC_STATE, (instance.slot_name,)).fetchone()
                    if instance.synchronous else None)
    except PitrError as exc:
        return [Check("server", False, hint=exc.message)]
    checks.append(Check("server", True, f"PostgreSQL {facts.version_num}, timeline "
                                        f"{facts.timeline}"))
    checks.append(Check("wal_level", facts.wal_level in ("replica", "logical"), facts.wal_level,
                        "set wal_level = replica and restart the server"))
    checks.append(Check("max_wal_senders", facts.max_wal_senders >= 2,
                        str(facts.max_wal_senders),
                        f"max_wal_senders is {facts.max_wal_senders}; set it to 10 and restart"))
    if slot is None:
        checks.append(Check(
            "replication slot", False,
            hint=f"slot {instance.slot_name} does not exist: WAL may be lost; run pitr ship "
                 f"{instance.name} to recreate it, then take a full backup"))
    else:
        retained_mb = (slot.retained_bytes or 0) / 1024 / 1024
        limit = instance.check.max_slot_retained_mb
        checks.append(Check(
            "replication slot", retained_mb <= limit,
            f"{slot.name} retains {retained_mb:.0f} MB of WAL",
            f"slot {slot.name} retains {retained_mb:.0f} MB (limit {limit:.0f} MB): "
            + ("the follower is not keeping up; see its status (pitr check, follower)"
               if instance.follow else
               "ship runs are not keeping up; check the ship_logs deployment")))
    if sync is not None:
        checks += _synchronous_checks(instance, str(sync[0] or ""), sync[1])
    if has_incrementals:
        checks.append(Check("summarize_wal", summarize == "on", str(summarize),
                            "incremental backups need summarize_wal = on: ALTER SYSTEM SET "
                            "summarize_wal = on; SELECT pg_reload_conf()"))
    return checks


def _synchronous_checks(instance: InstanceConfig, names: str, state: str | None) -> list[Check]:
    """synchronous = true: the server must name the receiver, and count it as synchronous."""
    app = instance.slot_name
    named = app in names.replace('"', " ").replace(",", " ").replace("(", " ").split() or (
        names.strip() == "*")
    return [
        Check("synchronous_standby_names", bool(names) and named, names,
              f"synchronous_standby_names is {names!r}, which does not name the receiver "
              f"{app}: ALTER SYSTEM SET synchronous_standby_names = '{app}'; "
              "SELECT pg_reload_conf()"),
        Check("synchronous standby", state in ("sync", "quorum"), f"{app} is {state}",
              f"the receiver {app} is {state or 'not connected'} in pg_stat_replication, not "
              "sync: commits are not waiting for it; is the follower running with "
              "synchronous = true?"),
    ]


def _follower_check(instance: InstanceConfig, repo: Repository, now: datetime) -> Check | None:
    """Follow mode: the follower's lag and heartbeat (when it is configured or has reported)."""
    if not instance.follow and read_status(repo, instance.name) is None:
        return None
    health = follower_health(instance, repo, now)
    # A follower started by hand and stopped again is not a failure of a batch setup.
    critical = instance.follow
    return Check("follower", health.ok, health.detail, health.problem, critical=critical)


def run_checks(instance: InstanceConfig, repo: Repository, now: datetime) -> list[Check]:
    catalog = read_catalog(repo, instance.name)
    has_incrementals = any(b.type == "incremental" for b in catalog.backups)
    checks = _server_checks(instance, has_incrementals)
    try:
        repo.check_writable()
        checks.append(Check("repository writable", True, repo.describe()))
    except PitrError as exc:
        checks.append(Check("repository writable", False, hint=exc.message))
    checks.extend(protection_checks(instance, repo))
    limits = instance.check
    newest = catalog.newest_backup_on()
    if newest is None:
        checks.append(Check("newest backup", False,
                            hint=f"no backup yet: run pitr backup full {instance.name}"))
    else:
        fresh = now - newest.stop_time <= timedelta(hours=limits.max_backup_age_hours)
        checks.append(Check("newest backup", fresh, f"{newest.id} ({newest.type}), "
                            f"{age_text(now, newest.stop_time)}",
                            f"newest backup {newest.id} is {age_text(now, newest.stop_time)}, over "
                            f"{limits.max_backup_age_hours:g} h: check the backup deployments"))
    mark = catalog.newest_mark
    if mark is None:
        checks.append(Check("newest WAL mark", False,
                            hint=f"no WAL shipped yet: run pitr ship {instance.name}"))
    else:
        fresh = now - mark.time <= timedelta(minutes=limits.max_mark_age_minutes)
        checks.append(Check("newest WAL mark", fresh, age_text(now, mark.time),
                            f"the newest WAL mark is {age_text(now, mark.time)}, over "
                            f"{limits.max_mark_age_minutes:g} min: the recoverable window is "
                            "falling behind; check the ship_logs deployment"))
    follower = _follower_check(instance, repo, now)
    if follower is not None:
        checks.append(follower)
    checks.append(drill_check(instance, repo, now))
    bad = []
    for backup in catalog.backups:
        status = verify_status(repo, instance.name, backup.id)
        if status is not None and not status.get("ok", False):
            bad.append(backup.id)
    checks.append(Check("backups verified", not bad, "no failed verify on record",
                        f"verify failed for {', '.join(bad)}: run pitr verify {instance.name}"))
    checks.append(_retention_check(instance, catalog, now))
    return checks


def _retention_check(instance: InstanceConfig, catalog: Any, now: datetime) -> Check:
    policy = instance.retention
    window = recoverable_window(catalog)
    if catalog.expiring:
        return Check("retention", False,
                     hint=f"an expire was interrupted ({', '.join(sorted(catalog.expiring))}): "
                          f"run pitr expire {instance.name}")
    if policy.window_days is not None:
        promised = now - timedelta(days=policy.window_days)
        if window.start is None or window.start > promised:
            have = window.start.isoformat() if window.start else "nothing"
            return Check("retention", False,
                         hint=f"the recoverable window starts at {have}, the policy promises "
                              f"{policy.window_days:g} days (from {promised.isoformat()})",
                         critical=False)
    if not policy.enabled:
        return Check("retention", True, "no policy configured: nothing is ever expired")
    return Check("retention", True, "policy satisfied")
