"""Entry points for the CLI and the flows: one call per user-visible SQL Server action.

Each takes the instance's configuration and an open repository, does one thing
and returns plain data (dicts, text), so a Prefect task wraps it in a few lines
and the CLI prints it.  Nothing here imports Prefect or pyodbc at import time.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pitrflow.config import InstanceConfig
from pitrflow.drill.record import drill_history
from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.sqlserver import render as _render
from pitrflow.engines.sqlserver.backup import take_sqlserver_backup
from pitrflow.engines.sqlserver.catalog import (
    SqlServerCatalog,
    import_recorded_rows,
    read_sqlserver_catalog,
    recording_path,
)
from pitrflow.engines.sqlserver.connection import open_session
from pitrflow.engines.sqlserver.restore import (
    PreparedRestore,
    dry_run_script,
    execute_restore,
    prepare_restore,
)
from pitrflow.engines.sqlserver.window import restorable_spans
from pitrflow.errors import ConfigError, PitrError
from pitrflow.storage.base import Repository


def _require_sqlserver(instance_cfg: InstanceConfig) -> None:
    if instance_cfg.engine != "sqlserver":
        raise ConfigError(
            f"instance {instance_cfg.name} has engine {instance_cfg.engine}, not sqlserver",
            "use the PostgreSQL commands for it, or set engine = \"sqlserver\"",
        )


def render(prepared: PreparedRestore, statements: list[str]) -> str:
    """The plan and its T-SQL as the text a dry run prints (and an artifact shows)."""
    return _render.plan_text(prepared, statements)


def sqlserver_backup(instance_cfg: InstanceConfig, repo: Repository, kind: str,
                     allow_full_fallback: bool | None = None) -> dict[str, Any]:
    """``kind``: full, incremental (a differential) or log.  Returns the stored backup."""
    _require_sqlserver(instance_cfg)
    return _render.backup_dict(
        take_sqlserver_backup(instance_cfg, repo, kind, allow_full_fallback))


def sqlserver_prepare(instance_cfg: InstanceConfig, repo: Repository,
                      target: RestoreTarget | datetime | None,
                      new_name: str | None = None, replace: bool = False,
                      now: datetime | None = None) -> PreparedRestore:
    """The plan from the repository's catalog, with names and staging decided; no server."""
    _require_sqlserver(instance_cfg)
    catalog = read_sqlserver_catalog(repo, instance_cfg.name)
    return prepare_restore(instance_cfg, catalog, target, new_name, replace, now)


def sqlserver_plan_text(instance_cfg: InstanceConfig, repo: Repository,
                        target: RestoreTarget | datetime | None, new_name: str | None = None,
                        replace: bool = False,
                        now: datetime | None = None) -> tuple[str, list[str]]:
    """The dry run: plan text and the T-SQL a restore to ``target`` would run."""
    prepared = sqlserver_prepare(instance_cfg, repo, target, new_name, replace, now)
    statements = dry_run_script(prepared)
    return render(prepared, statements), statements


def sqlserver_restore(instance_cfg: InstanceConfig, repo: Repository,
                      target: RestoreTarget | datetime | None,
                      new_name: str | None = None, replace: bool = False) -> dict[str, Any]:
    """Restore to ``target`` (a time, None for the latest, or any RestoreTarget SQL Server
    can stop at) under ``new_name`` (default: a new name)."""
    prepared = sqlserver_prepare(instance_cfg, repo, target, new_name, replace)
    with open_session(instance_cfg) as sql:
        outcome = execute_restore(prepared, repo, sql)
    return {
        **_render.plan_dict(prepared, outcome.statements),
        "replaced": outcome.replaced,
        "moves": outcome.moves,
        "timings": outcome.timings,
        "connect_hint": f"the database {prepared.new_name} is online on "
                        f"{instance_cfg.host},{instance_cfg.port}",
    }


def sqlserver_drill(instance_cfg: InstanceConfig, repo: Repository,
                    target: datetime | str | None = None, scratch_name: str | None = None,
                    keep: bool = False, checks_dir: Path | None = None) -> dict[str, Any]:
    """Restore under a scratch name, check it (CHECKDB, GX suites), drop it, record it.

    The steps the recovery_drill flow runs, in one call.  ``checks_dir`` holds the
    team suites (``<instance>/<schema>.<table>.json``); None runs the generated
    suites only.  The drill record, and GX's evidence next to it, are stored in the
    repository whatever the verdict; ``ok`` is False on findings.
    """
    from pitrflow.engines.sqlserver.drill_session import SqlServerDrillSession
    from pitrflow.engines.sqlserver.restore import execute_restore

    _require_sqlserver(instance_cfg)
    session = SqlServerDrillSession(instance_cfg, repo, target, checks_dir, scratch_name)
    restored: dict[str, Any] | None = None
    try:
        with open_session(instance_cfg) as sql:
            outcome = execute_restore(session.prepared, repo, sql)
        restored = {"restore_as": session.prepared.new_name, "timings": outcome.timings}
    except PitrError as exc:
        session.record_error(f"restore failed: {exc.message}")
    if restored is not None:
        session.check_integrity(restored)
        session.check_quality(restored)
    return session.finish(restored, keep).data


def sqlserver_info(instance_cfg: InstanceConfig, repo: Repository) -> dict[str, Any]:
    """What the repository holds for the instance, what it rejected and why, the window a
    restore can reach, each backup's last verify, and the drill history."""
    from pitrflow.catalog.verify_records import verify_status

    _require_sqlserver(instance_cfg)
    catalog = read_sqlserver_catalog(repo, instance_cfg.name)
    windows: dict[str, Any] = {}
    for database in catalog.databases():
        try:
            windows[database] = [{"from": a.isoformat(), "to": b.isoformat()}
                                 for a, b in restorable_spans(catalog, database)]
        except PitrError as exc:  # the latest plan itself is refused: say why, not crash
            windows[database] = {"problem": exc.message}
    return {
        "instance": instance_cfg.name, "engine": "sqlserver",
        "backups": [
            {"id": r.id, "type": r.kind, "database": r.database,
             "backup_set_id": r.backup_set_id, "first_lsn": str(r.rows[0].first_lsn),
             "last_lsn": str(r.rows[0].last_lsn), "size_bytes": r.size_bytes,
             "source": r.source, "verify": verify_status(repo, instance_cfg.name, r.id),
             "encryption": dict(r.encryption) if r.encryption else None}
            for r in catalog.records
        ],
        "rejected": [{"id": k, "reason": v} for k, v in sorted(catalog.rejected.items())],
        "restorable": windows,
        "marks": {database: _marks(catalog, database) for database in catalog.databases()},
        "drills": [d.to_dict() for d in drill_history(repo, instance_cfg.name)],
    }


def _marks(catalog: SqlServerCatalog, database: str) -> list[dict[str, Any]]:
    """The marked transactions a restore can name (--target-name), oldest first, each once."""
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for record in catalog.records:
        for mark in record.marks if record.database == database else ():
            seen.setdefault((mark.lsn, mark.mark_name), {
                "name": mark.mark_name, "lsn": str(mark.lsn),
                "time": mark.mark_time.isoformat(timespec="milliseconds"),
                "user": mark.user_name, "description": mark.description, "backup": record.id})
    return [seen[key] for key in sorted(seen)]


def sqlserver_import_recorded(path: str | os.PathLike[str], repo: Repository,
                              instance: str) -> list[str]:
    """Store a recording of msdb rows as (placeholder) backups, for demos and dry runs."""
    return import_recorded_rows(recording_path(path), repo, instance)
