"""Entry points for SQL Server retention, verify and check, and how their results read.

Each entry point takes the instance's configuration and an open repository and
returns plain data, as ``ops`` does for backups and restores, so a Prefect task
wraps it in a few lines and the CLI prints it.  The text and markdown renderers
sit here too, so the CLI, the artifacts and the tests show the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pitrflow.config import InstanceConfig
from pitrflow.engines.sqlserver.catalog import read_sqlserver_catalog
from pitrflow.engines.sqlserver.expire import SqlServerExpireResult, execute_sqlserver_expire
from pitrflow.engines.sqlserver.health import run_sqlserver_checks
from pitrflow.engines.sqlserver.retention import (
    RetentionDecision,
    SqlServerExpirePlan,
    plan_sqlserver_expire,
)
from pitrflow.engines.sqlserver.verify import SqlServerVerifyResult, verify_sqlserver
from pitrflow.errors import ConfigError
from pitrflow.health import Check
from pitrflow.render import locked_lines, locked_rows
from pitrflow.storage.base import Repository


def _require_sqlserver(instance_cfg: InstanceConfig) -> None:
    if instance_cfg.engine != "sqlserver":
        raise ConfigError(
            f"instance {instance_cfg.name} has engine {instance_cfg.engine}, not sqlserver",
            "use the PostgreSQL commands for it, or set engine = \"sqlserver\"",
        )


def sqlserver_expire(instance_cfg: InstanceConfig, repo: Repository, dry_run: bool,
                     now: datetime | None = None
                     ) -> tuple[SqlServerExpirePlan, SqlServerExpireResult | None]:
    """The retention plan, and unless ``dry_run`` what carrying it out deleted."""
    _require_sqlserver(instance_cfg)
    catalog = read_sqlserver_catalog(repo, instance_cfg.name)
    plan = plan_sqlserver_expire(catalog, instance_cfg.retention, now or datetime.now(UTC))
    if dry_run or plan.empty:
        return plan, None
    return plan, execute_sqlserver_expire(repo, catalog, plan)


def sqlserver_verify(instance_cfg: InstanceConfig, repo: Repository,
                     backup_id: str | None = None) -> list[SqlServerVerifyResult]:
    """Re-read every file (or one backup's) and each database's newest log chain."""
    _require_sqlserver(instance_cfg)
    return verify_sqlserver(instance_cfg, repo, backup_id)


def sqlserver_check(instance_cfg: InstanceConfig, repo: Repository,
                    now: datetime) -> list[Check]:
    """Server, repository and worker checks, in the shape PostgreSQL's checks give them."""
    _require_sqlserver(instance_cfg)
    return run_sqlserver_checks(instance_cfg, repo, now)


def _runs(decisions: Sequence[RetentionDecision]) -> list[list[RetentionDecision]]:
    """Consecutive log decisions with the same verdict and reason, as one run each."""
    runs: list[list[RetentionDecision]] = []
    for decision in decisions:
        last = runs[-1][-1] if runs else None
        if (last is not None and decision.kind == "log" and last.kind == "log"
                and (last.database, last.keep, last.reason)
                == (decision.database, decision.keep, decision.reason)):
            runs[-1].append(decision)
        else:
            runs.append([decision])
    return runs


def expire_text(plan: SqlServerExpirePlan) -> str:
    """The plan a user reads: one line per full or differential, one per run of logs."""
    lines = [f"expire plan for {plan.instance} (SQL Server)"]
    database = None
    for run in _runs(plan.decisions):
        first = run[0]
        if first.database != database:
            database = first.database
            lines.append(f"  database {database}")
        verdict = "keep  " if first.keep else "DELETE"
        if len(run) == 1:
            lines.append(f"    {verdict} {first.kind:<12} {first.backup_id}: {first.reason}")
        else:
            lines.append(f"    {verdict} {len(run)} log backups {first.backup_id} .. "
                         f"{run[-1].backup_id}: {first.reason}")
    for backup_id in plan.finish_expiring:
        lines.append(f"  DELETE {backup_id}: finishing an interrupted expire")
    deleted = [d for d in plan.decisions if not d.keep]
    if deleted:
        counts = ", ".join(f"{sum(d.kind == kind for d in deleted)} {kind}"
                           for kind in ("full", "differential", "log"))
        lines.append(f"  total: delete {len(deleted)} backup sets ({counts}), keep "
                     f"{len(plan.decisions) - len(deleted)}")
    lines += [f"  note: {note}" for note in plan.notes]
    if plan.empty:
        lines.append("  nothing to delete")
    return "\n".join(lines)


def expire_markdown(plan: SqlServerExpirePlan, done: bool,
                    result: SqlServerExpireResult | None = None) -> str:
    title = "Expired" if done else "Expire plan (dry run)"
    locked = "\n".join(locked_lines(result.locked)) if result is not None else ""
    outcome = f"\n```\n{locked}\n```\n" if locked else ""
    return f"## {title}: {plan.instance}\n\n```\n{expire_text(plan)}\n```\n{outcome}"


def expire_summary(plan: SqlServerExpirePlan,
                   result: SqlServerExpireResult | None) -> dict[str, Any]:
    """The expire task's result, with PostgreSQL's keys: log backups are backups here, so
    ``deleted_backups`` lists them and ``wal_deleted`` stays 0."""
    return {
        "engine": "sqlserver",
        "deleted_backups": result.backups_deleted if result else [],
        "planned_deletions": plan.delete_backups,
        "kept": plan.kept_backups,
        "logs_deleted": result.logs_deleted if result else 0,
        "wal_deleted": 0,
        "bytes_freed": result.bytes_freed if result else 0,
        "locked": locked_rows(result.locked) if result else [],
    }


def verify_lines(results: Sequence[dict[str, Any]]) -> list[str]:
    """``pitr verify`` output: a line per full or differential, a count of log backups."""
    lines = []
    logs = [r for r in results if r["type"] == "log"]
    for r in results:
        if r["type"] == "log" and r["log_chain"] == "not checked":
            continue
        verdict = "OK" if r["ok"] else "FAILED: " + "; ".join(r["problems"])
        files = f"{r['objects_checked']} file{'s' if r['objects_checked'] != 1 else ''}"
        chain = "" if r["log_chain"] == "not checked" else f", {r['log_chain']}"
        lines.append(f"{r['backup_id']} ({r['type']} {r['database']}): {verdict} ({files}{chain})")
    if logs:
        bad = [r for r in logs if not r["ok"]]
        files = sum(r["objects_checked"] for r in logs)
        lines.append(f"log backups: {len(logs)} checked ({files} files), "
                     + ("all OK" if not bad else f"{len(bad)} FAILED"))
    return lines


def verify_table(results: Sequence[SqlServerVerifyResult]) -> list[dict[str, Any]]:
    """Artifact rows: each full and differential, each failed log, one row for the rest."""
    rows = []
    fine_logs = fine_files = 0
    for r in results:
        if r.kind == "log" and r.ok and r.log_chain == "not checked":
            fine_logs += 1
            fine_files += r.objects_checked
            continue
        rows.append({"backup": r.backup_id, "type": r.kind, "database": r.database,
                     "result": "ok" if r.ok else "FAILED", "files": r.objects_checked,
                     "log chain": r.log_chain, "problems": "; ".join(r.problems)})
    if fine_logs:
        rows.append({"backup": f"{fine_logs} log backups", "type": "log", "database": "",
                     "result": "ok", "files": fine_files, "log chain": "", "problems": ""})
    return rows
