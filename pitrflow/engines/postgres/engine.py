"""PostgreSQL behind the Engine protocol: each operation one call into this package.

The work itself lives in the sub-packages (backup, wal, restore, catalog, drill);
this module binds them to an instance's configuration and renders each outcome
once, as text, markdown and JSON.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitrflow.catalog.verify_records import verify_status
from pitrflow.config import Config, InstanceConfig
from pitrflow.drill.record import drill_history
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
from pitrflow.engines.postgres import render
from pitrflow.engines.postgres.wal.walnames import format_lsn
from pitrflow.errors import UsageError
from pitrflow.health import failed_critical, render_lines
from pitrflow.render import drill_history_text, iso
from pitrflow.storage.base import Repository

if TYPE_CHECKING:
    from pitrflow.engines.postgres.restore.executor import RestoreRequest


class PostgresEngine:
    name = "postgresql"

    def __init__(self, config: Config, settings: InstanceConfig) -> None:
        self.config = config
        self.settings = settings
        self.instance = settings.name

    # --- backups and WAL ---

    def backup(self, repo: Repository, kind: BackupKind,
               allow_full_fallback: bool | None = None) -> BackupResult:
        from pitrflow.engines.postgres.backup.basebackup import take_backup
        from pitrflow.engines.postgres.backup.incremental import take_incremental

        if kind == "log":
            raise UsageError(f"instance {self.instance} is PostgreSQL, which has no log backups",
                             f"its WAL is shipped instead: pitr ship {self.instance}")
        if kind == "full":
            outcome = take_backup(self.settings, repo)
        else:
            allow = (self.settings.incremental_fallback if allow_full_fallback is None
                     else allow_full_fallback)
            outcome = take_incremental(self.settings, repo, allow)
        notes = list(outcome.notes)
        manifest = outcome.manifest
        text = "\n".join([*(f"note: {n}" for n in notes),
                          f"backup {manifest.id} ({manifest.type}) of {self.instance} complete: "
                          f"{manifest.size_bytes} bytes stored"])
        return BackupResult(
            instance=self.instance, artifact="backup", text=text,
            markdown=render.backup_markdown(outcome, notes),
            data={**render.backup_dict(manifest), "notes": notes},
            backup_id=manifest.id, kind=manifest.type, size_bytes=manifest.size_bytes,
            notes=notes)

    def ship(self, repo: Repository) -> ShipResult:
        from pitrflow.engines.postgres.wal.walnames import format_lsn
        from pitrflow.engines.postgres.wal.walship import ship_wal

        outcome = ship_wal(self.settings, repo)
        mark_time, mark_lsn = iso(outcome.mark.time), format_lsn(outcome.mark.lsn)
        if outcome.follower is not None:
            text = (f"follow mode: the follower of {self.instance} ships its WAL and is "
                    f"healthy (lag {outcome.lag.total_seconds():.0f} s); newest mark "
                    f"{mark_time} ({mark_lsn})")
        else:
            text = (f"shipped {len(outcome.segments_shipped)} segments of {self.instance}; "
                    f"recoverable up to {mark_time} ({mark_lsn})")
        return ShipResult(
            instance=self.instance, artifact="ship", text=text,
            markdown=render.ship_markdown(outcome),
            data={"mark_lsn": mark_lsn, "mark_time": mark_time,
                  "segments": outcome.segments_shipped,
                  "lag_seconds": outcome.lag.total_seconds(),
                  "slot_retained_bytes": outcome.slot.retained_bytes if outcome.slot else None,
                  "follower": outcome.follower is not None},
            recoverable_to=mark_time, size_bytes=outcome.bytes_stored)

    def follow(self, repo: Repository) -> Outcome:
        from pitrflow.engines.postgres.wal.follow import follow_until_signalled

        done = follow_until_signalled(self.settings, repo)
        text = (f"follower of {self.instance} stopped: {done.segments_stored} segments, "
                f"{done.partials_stored} partials, {done.marks_written} marks stored")
        return Outcome(instance=self.instance, artifact="follow", text=text, markdown=text,
                       data={"segments": done.segments_stored, "partials": done.partials_stored,
                             "marks": done.marks_written, "seconds": done.seconds})

    # --- restores ---

    def _request(self, destination: RestoreDestination) -> RestoreRequest:
        from pitrflow.engines.postgres.restore.executor import RestoreRequest

        if not destination.pgdata:
            raise UsageError(f"a restore of PostgreSQL instance {self.instance} needs a data "
                             "directory (pitr restore --pgdata DIR, or the pgdata parameter)",
                             "pass a new or empty directory for the restored data")
        return RestoreRequest(self.settings, Path(destination.pgdata).absolute(),
                              destination.port, config_file=self.config.source,
                              scratch=destination.scratch, standby=destination.standby,
                              primary_conninfo=destination.primary_conninfo,
                              delta=destination.delta,
                              delta_trust_mtime=destination.delta_trust_mtime,
                              tablespace_map=tuple((k, str(Path(d).absolute()))
                                                   for k, d in destination.tablespace_map),
                              tablespace_map_all=(str(Path(destination.tablespace_map_all)
                                                      .absolute())
                                                  if destination.tablespace_map_all else None),
                              db_include=tuple(destination.db_include))

    def plan_restore(self, repo: Repository, target: RestoreTarget,
                     destination: RestoreDestination) -> RestorePlan:
        from pitrflow.engines.postgres.catalog.snapshot import read_catalog
        from pitrflow.engines.postgres.restore.executor import preflight
        from pitrflow.engines.postgres.restore.planner import plan_restore

        request = self._request(destination)
        plan = plan_restore(read_catalog(repo, self.instance), target)
        checks = preflight(plan, request)
        placed = render.placement_lines(checks.tablespaces, checks.excluded)
        return RestorePlan(
            instance=self.instance, artifact="restore-plan",
            text="\n".join([render.plan_text(plan), *placed]),
            markdown=render.plan_markdown(plan, placed),
            data={"plan": render.plan_dict(plan), "port": checks.port,
                  "free_bytes": checks.free_bytes,
                  **render.placement_dict(checks.tablespaces, checks.excluded)},
            plan=plan, target=target,
            destination=replace(destination, pgdata=str(request.pgdata)),
            lock=str(request.pgdata))

    def restore(self, repo: Repository, plan: RestorePlan) -> RestoreResult:
        from pitrflow.engines.postgres.restore.executor import execute_restore

        outcome = execute_restore(plan.plan, self._request(plan.destination), repo)
        summary = render.restore_text(outcome)
        data = {
            "pgdata": str(outcome.pgdata), "port": outcome.port,
            "socket_dir": str(outcome.socket_dir), "run_as": outcome.run_as,
            **render.placement_dict(outcome.tablespaces, outcome.excluded),
            "last_transaction": outcome.last_transaction, "phases": outcome.phases,
            "chain": [b.id for b in plan.plan.chain], "wal_segments": len(plan.plan.wal),
            "server_version": plan.plan.backup.server_version, "summary": summary,
        }
        return RestoreResult(instance=self.instance, artifact="restore", text=summary,
                             markdown=render.restore_markdown(outcome), data=data)

    def prepare_drill(self, repo: Repository, to: str) -> DrillSession:
        from pitrflow.engines.postgres.drill.session import PostgresDrillSession

        return PostgresDrillSession.prepare(self.config, self.settings, repo, to)

    # --- retention, verify, check, info ---

    def plan_expire(self, repo: Repository, now: datetime) -> ExpirePlan:
        from pitrflow.engines.postgres.catalog.retention import plan_expire
        from pitrflow.engines.postgres.catalog.snapshot import read_catalog

        catalog = read_catalog(repo, self.instance)
        plan = plan_expire(catalog, self.settings.retention, now)
        return ExpirePlan(
            instance=self.instance, artifact="expire", text=render.expire_text(plan),
            markdown=render.expire_markdown(plan, False),
            data={"deleted_backups": [], "planned_deletions": plan.delete_backups,
                  "kept": plan.kept_backups, "wal_deleted": 0, "bytes_freed": 0},
            plan=(catalog, plan), empty=plan.empty)

    def expire(self, repo: Repository, plan: ExpirePlan) -> ExpireResult:
        from pitrflow.engines.postgres.catalog.expire import execute_expire
        from pitrflow.render import locked_lines, locked_rows

        catalog, expire_plan = plan.plan
        result = execute_expire(repo, catalog, expire_plan)
        text = "\n".join([render.expire_done_text(result), *locked_lines(result.locked)])
        return ExpireResult(
            instance=self.instance, artifact="expire", text=text,
            markdown=render.expire_markdown(expire_plan, True, result),
            data={"deleted_backups": list(result.backups_deleted),
                  "planned_deletions": expire_plan.delete_backups,
                  "kept": expire_plan.kept_backups, "wal_deleted": result.wal_deleted,
                  "bytes_freed": result.bytes_freed, "locked": locked_rows(result.locked)},
            deleted=list(result.backups_deleted), bytes_freed=result.bytes_freed)

    def verify(self, repo: Repository, backup_id: str | None) -> VerifyReport:
        from pitrflow.engines.postgres.catalog.verify import verify

        results = verify(self.settings, repo, backup_id)
        rows = [{"backup": r.backup_id, "result": "ok" if r.ok else "FAILED",
                 "objects": r.objects_checked, "wal segments": r.wal_segments_checked,
                 "pg_verifybackup": r.pg_verifybackup, "problems": "; ".join(r.problems)}
                for r in results]
        dicts = [r.to_dict() for r in results]
        return VerifyReport(
            instance=self.instance, artifact="verify", text=self.verify_text(dicts),
            markdown="", table=rows, data={"results": dicts},
            problems=[p for r in results for p in r.problems])

    def verify_text(self, results: list[dict[str, Any]]) -> str:
        return "\n".join(f"{r['backup_id']}: " + (
            f"OK ({r['objects_checked']} objects, {r['wal_segments_checked']} WAL segments, "
            f"pg_verifybackup {r['pg_verifybackup']})" if r["ok"]
            else "FAILED: " + "; ".join(r["problems"])) for r in results)

    def check(self, repo: Repository, now: datetime) -> CheckReport:
        from pitrflow.engines.postgres.health import run_checks

        checks = run_checks(self.settings, repo, now)
        text = render_lines(checks)
        return CheckReport(
            instance=self.instance, artifact="check", text=text,
            markdown=f"## Check {self.instance}\n\n```\n{text}\n```\n",
            data={"instance": self.instance, "ok": not failed_critical(checks),
                  "checks": [c.to_dict() for c in checks]},
            checks=checks)

    def info(self, repo: Repository) -> Outcome:
        from pitrflow.engines.postgres.catalog.retention import plan_expire
        from pitrflow.engines.postgres.catalog.snapshot import read_catalog

        catalog = read_catalog(repo, self.instance)
        drills = drill_history(repo, self.instance)
        verify = {b.id: s for b in catalog.backups
                  if (s := verify_status(repo, self.instance, b.id)) is not None}
        retention = None
        if self.settings.retention.enabled:
            expire_plan = plan_expire(catalog, self.settings.retention, datetime.now(UTC))
            retention = {d.backup_id: (d.keep, d.reason) for d in expire_plan.decisions}
        data = render.info_dict(catalog, verify, retention)
        data["drills"] = [d.to_dict() for d in drills]
        text = render.info_text(catalog, verify, retention) + "\n" + drill_history_text(drills)
        return Outcome(instance=self.instance, artifact="info", text=text,
                       markdown=f"```\n{text}\n```\n", data=data)

    def mark(self, repo: Repository, name: str) -> Outcome:
        from pitrflow.engines.postgres.wal.restore_points import create_restore_point

        point = create_restore_point(self.settings, repo, name)
        text = (f"restore point {point.name!r} of {self.instance} created at "
                f"{iso(point.time)} (LSN {format_lsn(point.lsn)}, timeline {point.timeline}); "
                f"restorable once shipped (pitr ship {self.instance}): pitr restore "
                f"{self.instance} --target-name {point.name!r}")
        return Outcome(instance=self.instance, artifact="mark", text=text,
                       markdown=text, data={"name": point.name, "time": iso(point.time),
                                            "lsn": format_lsn(point.lsn),
                                            "timeline": point.timeline})

    def import_history(self, repo: Repository, recording: str) -> Outcome:
        raise UsageError(f"instance {self.instance} is not a SQL Server instance",
                         "import-msdb reads SQL Server backup history")
