"""SQL Server behind the Engine protocol: each operation one call into this package.

A backup here is written by the server itself (full, differential, or log);
`ship` is a log backup, since that is how SQL Server moves its log off the
host.  Nothing here imports pyodbc at import time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pitrflow.config import Config, InstanceConfig
from pitrflow.engines.base import (
    BackupKind,
    BackupResult,
    CheckReport,
    DrillSession,
    ExpirePlan,
    ExpireResult,
    Outcome,
    RestoreDestination,
    RestorePlan,
    RestoreResult,
    RestoreTarget,
    ShipResult,
    VerifyReport,
)
from pitrflow.engines.sqlserver import maintenance, ops
from pitrflow.engines.sqlserver import render as sql_render
from pitrflow.errors import UsageError
from pitrflow.health import failed_critical, render_lines
from pitrflow.render import drill_history_text
from pitrflow.storage.base import Repository


class SqlServerEngine:
    name = "sqlserver"

    def __init__(self, config: Config, settings: InstanceConfig) -> None:
        self.config = config
        self.settings = settings
        self.instance = settings.name

    def backup(self, repo: Repository, kind: BackupKind,
               allow_full_fallback: bool | None = None) -> BackupResult:
        result = ops.sqlserver_backup(self.settings, repo, kind, allow_full_fallback)
        notes = list(result.get("notes", []))
        text = "\n".join([*(f"note: {n}" for n in notes),
                          f"backup {result['id']} ({result['type']}) of {self.instance} "
                          f"complete: {result['size_bytes']} bytes stored"])
        return BackupResult(
            instance=self.instance, artifact="backup" if kind != "log" else "ship",
            text=text, markdown=sql_render.backup_markdown(result), data=result,
            backup_id=result["id"], kind=result["type"], size_bytes=result["size_bytes"],
            notes=notes)

    def ship(self, repo: Repository) -> ShipResult:
        backup = self.backup(repo, "log")
        data = backup.data
        return ShipResult(
            instance=self.instance, artifact="ship",
            text=f"log backup {data['id']} of {self.instance} stored; recoverable up to "
                 f"{data['stop_time']} (LSN {data['last_lsn']})",
            markdown=backup.markdown,
            data={"mark_lsn": data["last_lsn"], "mark_time": data["stop_time"],
                  "segments": [data["id"]], "lag_seconds": None, "slot_retained_bytes": None},
            recoverable_to=data["stop_time"], size_bytes=backup.size_bytes)

    def follow(self, repo: Repository) -> Outcome:
        raise UsageError(f"instance {self.instance} is SQL Server: follow mode streams "
                         "PostgreSQL's WAL", "schedule log backups (the ship_logs deployment) "
                         "as often as the RPO asks")

    def plan_restore(self, repo: Repository, target: RestoreTarget,
                     destination: RestoreDestination) -> RestorePlan:
        from pitrflow.engines.sqlserver.restore import dry_run_script

        if destination.delta:
            raise UsageError(f"instance {self.instance} is SQL Server: a delta restore is "
                             "PostgreSQL's", "restore with --replace to overwrite a database")
        if destination.standby:
            raise UsageError(f"instance {self.instance} is SQL Server: a restore as a standby "
                             "is PostgreSQL's", "restore a SQL Server database without "
                             "--standby")
        if destination.tablespace_map or destination.tablespace_map_all or (
                destination.db_include):
            raise UsageError(f"instance {self.instance} is SQL Server: tablespace maps and "
                             "--db-include are PostgreSQL's", "a SQL Server restore restores "
                             "one database, its files where data_dir_server says")
        prepared = ops.sqlserver_prepare(self.settings, repo, target,
                                         destination.database_name, destination.replace)
        statements = dry_run_script(prepared)
        # The name is decided once, here: a default name stamped with the time must not
        # drift by a second between the plan a user saw and the restore that runs.
        resolved = RestoreDestination(database_name=prepared.new_name,
                                      replace=destination.replace,
                                      scratch=destination.scratch)
        return RestorePlan(
            instance=self.instance, artifact="restore-plan",
            text=ops.render(prepared, statements),
            markdown=sql_render.plan_markdown(prepared, statements),
            data={"plan": sql_render.plan_dict(prepared, statements),
                  "statements": statements},
            plan=prepared, target=target, destination=resolved,
            lock=f"{self.settings.host}:{self.settings.port}/{prepared.new_name}")

    def restore(self, repo: Repository, plan: RestorePlan) -> RestoreResult:
        from pitrflow.engines.sqlserver.connection import open_session
        from pitrflow.engines.sqlserver.restore import execute_restore, require_backup_data

        prepared = plan.plan
        require_backup_data(prepared)
        with open_session(self.settings) as sql:
            outcome = execute_restore(prepared, repo, sql)
        hint = (f"the database {prepared.new_name} is online on {self.settings.host},"
                f"{self.settings.port}")
        data = {**sql_render.plan_dict(prepared, outcome.statements),
                "replaced": outcome.replaced, "moves": outcome.moves,
                "timings": outcome.timings, "connect_hint": hint}
        return RestoreResult(instance=self.instance, artifact="restore", text=hint,
                             markdown=f"## SQL Server restore\n\n{hint}\n", data=data)

    def prepare_drill(self, repo: Repository, to: str) -> DrillSession:
        from pitrflow.engines.sqlserver.drill_session import SqlServerDrillSession

        checks_dir = self.settings.drill.checks_dir or (self.config.source.parent / "checks")
        return SqlServerDrillSession(self.settings, repo, to, checks_dir)

    def plan_expire(self, repo: Repository, now: datetime) -> ExpirePlan:
        from pitrflow.engines.sqlserver.catalog import read_sqlserver_catalog
        from pitrflow.engines.sqlserver.retention import plan_sqlserver_expire

        catalog = read_sqlserver_catalog(repo, self.instance)
        plan = plan_sqlserver_expire(catalog, self.settings.retention, now)
        return ExpirePlan(
            instance=self.instance, artifact="expire", text=maintenance.expire_text(plan),
            markdown=maintenance.expire_markdown(plan, False),
            data=maintenance.expire_summary(plan, None), plan=(catalog, plan),
            empty=plan.empty)

    def expire(self, repo: Repository, plan: ExpirePlan) -> ExpireResult:
        from pitrflow.engines.sqlserver.expire import execute_sqlserver_expire

        catalog, expire_plan = plan.plan
        from pitrflow.render import locked_lines

        result = execute_sqlserver_expire(repo, catalog, expire_plan)
        text = "\n".join([f"deleted {len(result.backups_deleted)} backup sets "
                          f"({result.logs_deleted} of them log backups), {result.bytes_freed} "
                          "bytes freed", *locked_lines(result.locked)])
        return ExpireResult(
            instance=self.instance, artifact="expire", text=text,
            markdown=maintenance.expire_markdown(expire_plan, True, result),
            data=maintenance.expire_summary(expire_plan, result),
            deleted=list(result.backups_deleted), bytes_freed=result.bytes_freed)

    def verify(self, repo: Repository, backup_id: str | None) -> VerifyReport:
        results = maintenance.sqlserver_verify(self.settings, repo, backup_id)
        dicts = [r.to_dict() for r in results]
        return VerifyReport(
            instance=self.instance, artifact="verify",
            text=self.verify_text(dicts), markdown="",
            table=maintenance.verify_table(results), data={"results": dicts},
            problems=[p for r in results for p in r.problems])

    def verify_text(self, results: list[dict[str, Any]]) -> str:
        return "\n".join(maintenance.verify_lines(results))

    def check(self, repo: Repository, now: datetime) -> CheckReport:
        checks = maintenance.sqlserver_check(self.settings, repo, now)
        text = render_lines(checks)
        return CheckReport(
            instance=self.instance, artifact="check", text=text,
            markdown=f"## Check {self.instance}\n\n```\n{text}\n```\n",
            data={"instance": self.instance, "ok": not failed_critical(checks),
                  "checks": [c.to_dict() for c in checks]},
            checks=checks)

    def info(self, repo: Repository) -> Outcome:
        from pitrflow.drill.record import drill_history

        data = ops.sqlserver_info(self.settings, repo)
        text = sql_render.info_text(data) + "\n" + drill_history_text(
            drill_history(repo, self.instance))
        return Outcome(instance=self.instance, artifact="info", text=text,
                       markdown=f"```\n{text}\n```\n", data=data)

    def mark(self, repo: Repository, name: str) -> Outcome:
        raise UsageError(f"instance {self.instance} is SQL Server, whose marks are set by the "
                         "transactions themselves",
                         f"BEGIN TRANSACTION {name} WITH MARK; ...; COMMIT in the database: its "
                         "next log backup records the mark, then restore with --target-name")

    def import_history(self, repo: Repository, recording: str) -> Outcome:
        ids = ops.sqlserver_import_recorded(recording, repo, self.instance)
        text = (f"imported {len(ids)} backup sets of {self.instance} from {recording} "
                "as planning-only backups (restores of them run with --dry-run only)")
        return Outcome(instance=self.instance, artifact="import", text=text, markdown=text,
                       data={"imported": ids})
