"""``pitr check`` for SQL Server: the same ``Check`` lines as PostgreSQL's, in three groups.

The server group connects (``open_session``) and asks for the server's version, the
database's state and recovery model, and the base a differential would use.  The
repository group reads the catalog only, so it still reports when the server is
down; its verdicts are pure given ``now``.  The worker group checks the directory
the server's backup files arrive in.  A failure is one line (``name: FAILED
(hint)``), never a traceback.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta

from pitrflow.catalog.verify_records import verify_status
from pitrflow.config import InstanceConfig
from pitrflow.engines.sqlserver.backup import (
    DATABASE_STATE_SQL,
    DIFFERENTIAL_BASE_SQL,
    SERVER_SQL,
    differential_base_problem,
    refuse_unsuitable,
)
from pitrflow.engines.sqlserver.catalog import SqlServerCatalog, read_sqlserver_catalog
from pitrflow.engines.sqlserver.connection import open_session
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import row_times_utc
from pitrflow.engines.sqlserver.planner import is_restore_base
from pitrflow.engines.sqlserver.record import SqlServerBackupRecord
from pitrflow.engines.sqlserver.verify import log_chain
from pitrflow.errors import PitrError
from pitrflow.health import Check, age_text, drill_check, protection_checks
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import verify_key

CHECK_STATEMENT_TIMEOUT = 60
"""Seconds a check query may run: they read catalog views, never user data."""


def _finish(record: SqlServerBackupRecord) -> datetime | None:
    try:
        return row_times_utc(record.rows[0])[1]
    except SqlServerPlanError:
        return None


def _newest(records: list[SqlServerBackupRecord]) -> tuple[SqlServerBackupRecord, datetime] | None:
    timed = [(r, f) for r in records if (f := _finish(r)) is not None]
    return max(timed, key=lambda item: (item[1], item[0].backup_set_id), default=None)


def server_checks(instance: InstanceConfig, catalog: SqlServerCatalog | None) -> list[Check]:
    """Reachability, the database's state and recovery model, the differential base."""
    database = instance.database
    try:
        with open_session(instance, statement_timeout=CHECK_STATEMENT_TIMEOUT) as sql:
            server = sql.query(SERVER_SQL)[0]
            state = sql.query(DATABASE_STATE_SQL, [database])
            base = sql.query(DIFFERENTIAL_BASE_SQL, [database]) if state else []
    except PitrError as exc:
        return [Check("server", False, hint=exc.message)]
    checks = [Check("server", True, f"{server.get('server_name')}: SQL Server "
                                    f"{server.get('product_version')} ({server.get('edition')})")]
    try:
        # The same refusal a log backup would meet: missing, offline, or SIMPLE recovery.
        refuse_unsuitable(database, "log", state)
    except PitrError as exc:
        checks.append(Check("database", False, hint=f"{exc.message}; {exc.hint}"))
        return checks
    row = state[0]
    checks.append(Check("database", True, f"{database}: {row.get('state_desc')}, recovery model "
                                          f"{row.get('recovery_model_desc')}"))
    if catalog is not None:
        problem = differential_base_problem(catalog, database, base)
        checks.append(Check(
            "differential base", problem is None, "the server's differential base is stored",
            f"{problem}; the next incremental becomes a full (or fails with --no-fallback): "
            f"take one now with pitr backup full {instance.name}", critical=False))
    return checks


def repository_checks(instance: InstanceConfig, repo: Repository,
                      now: datetime) -> tuple[list[Check], SqlServerCatalog | None]:
    """What the repository alone says; the catalog too, for the server checks."""
    checks: list[Check] = []
    try:
        catalog = read_sqlserver_catalog(repo, instance.name)
    except PitrError as exc:
        checks.append(Check("repository readable", False, hint=exc.message))
        catalog = None
    else:
        rejected = f", {len(catalog.rejected)} not usable" if catalog.rejected else ""
        checks.append(Check("repository readable", True,
                            f"{repo.describe()}: {len(catalog.records)} backup sets{rejected}"))
    try:
        repo.check_writable()
        checks.append(Check("repository writable", True, repo.describe()))
    except PitrError as exc:
        checks.append(Check("repository writable", False, hint=exc.message))
    checks.extend(protection_checks(instance, repo))
    if catalog is not None:
        checks.extend(catalog_checks(instance, repo, catalog, now))
    return checks, catalog


def catalog_checks(instance: InstanceConfig, repo: Repository, catalog: SqlServerCatalog,
                   now: datetime) -> list[Check]:
    """Ages, the log chain, drills, verify results and retention, from the catalog."""
    name, database, limits = instance.name, instance.database, instance.check
    records = [r for r in catalog.records if r.database == database]
    checks = []
    newest = _newest([r for r in records if r.kind in ("full", "differential")])
    if newest is None:
        checks.append(Check("newest backup", False,
                            hint=f"no backup of {database} yet: run pitr backup full {name}"))
    else:
        record, finished = newest
        checks.append(Check(
            "newest backup", now - finished <= timedelta(hours=limits.max_backup_age_hours),
            f"{record.id} ({record.kind}), {age_text(now, finished)}",
            f"newest backup {record.id} is {age_text(now, finished)}, over "
            f"{limits.max_backup_age_hours:g} h: check the backup deployments"))
    newest_log = _newest([r for r in records if r.kind == "log"])
    if newest_log is None:
        checks.append(Check("newest log backup", False,
                            hint=f"no log backup of {database} yet: run pitr ship {name}"))
    else:
        record, finished = newest_log
        checks.append(Check(
            "newest log backup",
            now - finished <= timedelta(minutes=limits.max_mark_age_minutes),
            f"{record.id}, {age_text(now, finished)}",
            f"the newest log backup {record.id} is {age_text(now, finished)}, over "
            f"{limits.max_mark_age_minutes:g} min: the recoverable window is falling behind; "
            "check the ship_logs deployment"))
    if records:
        chain = log_chain(catalog, database)
        hint = chain.text
        if chain.start is not None:
            hint += f"; a new full backup (pitr backup full {name}) starts an unbroken chain"
        checks.append(Check("log chain", chain.ok, chain.text, hint))
    checks.append(drill_check(instance, repo, now))
    checks.append(_verified(repo, catalog, name))
    checks.append(_retention(instance, catalog, now))
    return checks


def _verified(repo: Repository, catalog: SqlServerCatalog, name: str) -> Check:
    """Failed verify results on record; one listing, then only the records that exist."""
    stored = {info.key for info in repo.list(f"{name}/verify/")}
    bad = []
    for record in catalog.records:
        if verify_key(name, record.id) in stored:
            status = verify_status(repo, name, record.id)
            if status is not None and not status.get("ok", False):
                bad.append(record.id)
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return Check("backups verified", not bad, "no failed verify on record",
                 f"verify failed for {shown}: run pitr verify {name}")


def _retention(instance: InstanceConfig, catalog: SqlServerCatalog, now: datetime) -> Check:
    policy = instance.retention
    if catalog.expiring:
        return Check("retention", False,
                     hint=f"an expire was interrupted ({', '.join(sorted(catalog.expiring))}): "
                          f"run pitr expire {instance.name}")
    if policy.window_days is not None:
        promised = now - timedelta(days=policy.window_days)
        fulls = [f for r in catalog.records
                 if r.database == instance.database and r.kind == "full"
                 and is_restore_base(r.rows[0]) and (f := _finish(r)) is not None]
        start = min(fulls, default=None)
        if start is None or start > promised:
            have = start.isoformat() if start else "nothing"
            return Check("retention", False,
                         hint=f"the oldest full backup finished {have}, the policy promises "
                              f"{policy.window_days:g} days (from {promised.isoformat()})",
                         critical=False)
    if not policy.enabled:
        return Check("retention", True, "no policy configured: nothing is ever expired")
    return Check("retention", True, "policy satisfied")


def worker_check(instance: InstanceConfig) -> Check:
    """backup_dir_worker exists and takes a file: the server's backups arrive there."""
    directory = instance.backup_dir_worker
    if directory is None and instance.backup_to_url:
        # BACKUP TO URL: the server writes into the repository; no shared directory.
        return Check("backup_dir_worker", True,
                     f"not needed: backups go to {instance.backup_dir_server}")
    hint = (f"backup_dir_worker {directory} {{}}: mount the directory the server writes to "
            f"(backup_dir_server {instance.backup_dir_server}) there, writable by the worker")
    if directory is None or not directory.is_dir():
        return Check("backup_dir_worker", False, hint=hint.format("is not a directory"))
    try:
        fd, probe = tempfile.mkstemp(prefix=".pitrflow-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return Check("backup_dir_worker", False,
                     hint=hint.format(f"is not writable ({exc.strerror})"))
    return Check("backup_dir_worker", True, str(directory))


def run_sqlserver_checks(instance: InstanceConfig, repo: Repository,
                         now: datetime) -> list[Check]:
    """Server checks first (as for PostgreSQL), then the repository's, then the worker's."""
    repository, catalog = repository_checks(instance, repo, now)
    return [*server_checks(instance, catalog), *repository, worker_check(instance)]
