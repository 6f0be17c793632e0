"""SQL Server plans, backups and drills as text and as JSON-ready dicts.

One renderer per object, shared by the CLI, the flows' artifacts and the tests, so
what a dry run prints is what an artifact shows.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pitrflow.drill.record import DrillRecord
from pitrflow.engines.sqlserver.backup import SqlServerBackupOutcome
from pitrflow.engines.sqlserver.drill import SqlServerDrillOutcome
from pitrflow.engines.sqlserver.msdb import mark_body, row_times_utc, time_zone_offset
from pitrflow.engines.sqlserver.plan import SqlServerRestorePlan
from pitrflow.engines.sqlserver.record import SOURCE_RECORDED
from pitrflow.engines.sqlserver.restore import PreparedRestore
from pitrflow.engines.sqlserver.tsql import stop_option
from pitrflow.render import human_bytes, verdicts_markdown


def _utc(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return text + " UTC"


def _offset(time_zone: int) -> str:
    offset = time_zone_offset(time_zone)
    sign = "-" if offset < timedelta(0) else "+"
    hours, minutes = divmod(abs(int(offset.total_seconds())) // 60, 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def target_text(plan: SqlServerRestorePlan) -> str:
    """The target in words: a time in UTC, an LSN, a marked transaction, or an end."""
    if plan.target_kind == "time" and plan.target_utc is not None:
        return _utc(plan.target_utc)
    before = " (exclusive: just before it)" if plan.exclusive else ""
    if plan.mark is not None:
        return (f"marked transaction {plan.mark.mark_name!r} (LSN {plan.mark.lsn}, committed "
                f"{plan.mark.mark_time.isoformat(sep=' ', timespec='milliseconds')} server "
                f"local time){before}")
    if plan.target_lsn is not None:
        return f"LSN {plan.target_lsn}{before}"
    if plan.target_kind == "immediate":
        anchor = plan.differential or plan.full
        return (f"the end of {anchor.kind} backup set {anchor.backup_set_id} "
                f"(immediate: LSN {anchor.last_lsn})")
    return "the latest recorded log"


def plan_text(prepared: PreparedRestore, statements: list[str]) -> str:
    """The plan a user reads before saying yes: what, from which backups, why, and the T-SQL."""
    plan = prepared.plan
    lines = [f"SQL Server restore of {prepared.database} (instance {prepared.instance}) "
             f"to {target_text(plan)}"]
    how = ("over the existing database (--replace)" if prepared.replace
           else "a new database")
    lines.append(f"  restore as   {prepared.new_name} ({how})")
    if plan.stopat_local is not None and plan.stopat_time_zone is not None:
        stopat = plan.stopat_local.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        lines.append(f"  STOPAT       '{stopat}' (server local time, "
                     f"{_offset(plan.stopat_time_zone)})")
    elif (stop := stop_option(plan)) is not None:
        lines.append(f"  stop         {stop} (on every log restore)")
    lines.append(f"  fork         {plan.recovery_fork}")
    lines.append("  steps")
    by_set = {record.backup_set_id: record for record in prepared.records}
    for index, step in enumerate(plan.steps, 1):
        record = by_set[step.backup_set_id]
        lines.append(
            f"    {index:>2}. {step.kind:<12} backup set {step.backup_set_id:<8} "
            f"{record.id:<28} finished {_utc(step.finish_utc)}  "
            f"LSN {step.first_lsn} -> {step.last_lsn}  {human_bytes(record.size_bytes)}"
            + (" (bulk-logged)" if step.has_bulk_logged_data else "")
        )
    if prepared.staging_worker is None:
        lines.append(f"  read         {len(prepared.files)} objects, "
                     f"{human_bytes(prepared.size_bytes)}, checked against their SHA-256, "
                     f"then read by the server from {prepared.staging_server} (RESTORE FROM URL)")
    else:
        lines.append(f"  stage        {len(prepared.files)} files, "
                     f"{human_bytes(prepared.size_bytes)}, from the repository into "
                     f"{prepared.staging_worker}")
        lines.append(f"               (the server reads them at {prepared.staging_server})")
    where = (f"data_dir_server {prepared.data_dir_server}" if prepared.data_dir_server
             else "the server's default data and log directories")
    lines.append(f"  MOVE         every file, named after {prepared.new_name}, into {where}; "
                 "the list comes from RESTORE FILELISTONLY when the restore runs")
    if any(record.source == SOURCE_RECORDED for record in prepared.records):
        lines.append("  note         imported from recorded msdb rows: a plan and dry run only")
    lines.append("  why")
    lines.extend(f"    - {reason}" for reason in plan.reasons)
    lines.append("T-SQL")
    lines.extend(f"  {statement};" for statement in statements)
    return "\n".join(lines)


def plan_dict(prepared: PreparedRestore, statements: list[str]) -> dict[str, Any]:
    plan = prepared.plan
    by_set = {record.backup_set_id: record for record in prepared.records}
    return {
        "instance": prepared.instance,
        "database": prepared.database,
        "restore_as": prepared.new_name,
        "replace": prepared.replace,
        "target": None if plan.target_utc is None else plan.target_utc.isoformat(),
        "target_kind": plan.target_kind,
        "target_text": target_text(plan),
        "target_lsn": None if plan.target_lsn is None else str(plan.target_lsn),
        "exclusive": plan.exclusive,
        "mark": None if plan.mark is None else mark_body(plan.mark),
        "stop": stop_option(plan),
        "stopat_local": None if plan.stopat_local is None else plan.stopat_local.isoformat(),
        "stopat_time_zone": plan.stopat_time_zone,
        "recovery_fork": plan.recovery_fork,
        "steps": [
            {"kind": step.kind, "backup_set_id": step.backup_set_id,
             "backup": by_set[step.backup_set_id].id, "first_lsn": str(step.first_lsn),
             "last_lsn": str(step.last_lsn), "finish": step.finish_utc.isoformat(),
             "files": list(step.files)}
            for step in prepared.staged_plan.steps
        ],
        "stage_bytes": prepared.size_bytes,
        "reasons": list(plan.reasons),
        "statements": statements,
    }


def backup_dict(outcome: SqlServerBackupOutcome) -> dict[str, Any]:
    record = outcome.record
    head = record.rows[0]
    start, finish = row_times_utc(head)
    return {
        "id": record.id, "instance": record.instance, "engine": "sqlserver",
        "type": record.kind, "requested": outcome.requested, "database": record.database,
        "backup_set_id": head.backup_set_id, "first_lsn": str(head.first_lsn),
        "last_lsn": str(head.last_lsn), "checkpoint_lsn": str(head.checkpoint_lsn),
        "start_time": start.isoformat(), "stop_time": finish.isoformat(),
        "size_bytes": record.size_bytes, "sha256": record.files[0].sha256,
        "compression": record.compression, "duration_seconds": record.duration_seconds,
        "statements": list(outcome.statements), "notes": list(outcome.notes),
    }


def drill_dict(outcome: SqlServerDrillOutcome, record: DrillRecord | None = None,
               record_key: str | None = None) -> dict[str, Any]:
    """The drill as the task, the CLI and the artifacts see it.

    ``findings`` lists everything that failed the drill (the first one names it);
    ``quality`` holds one row per expectation, as the drill-checks table shows them.
    """
    def iso(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    return {
        "instance": outcome.instance, "engine": "sqlserver", "database": outcome.database,
        "scratch_name": outcome.scratch_name,
        "target": iso(outcome.target_utc),
        "target_mode": outcome.target_mode
        or ("latest" if outcome.target_utc is None else "time"),
        "started": iso(outcome.started), "finished": iso(outcome.finished),
        "window_from": iso(outcome.window_from), "window_to": iso(outcome.window_to),
        "ok": outcome.ok, "findings": outcome.findings, "timings": dict(outcome.timings),
        "rto_seconds": outcome.rto_seconds, "data_lag_seconds": outcome.data_lag_seconds,
        "kept": outcome.kept, "kept_at": record.kept_at if record else None,
        "backups": outcome.backups,
        "integrity_findings": list(outcome.integrity),
        "quality_checked": len(outcome.quality),
        "quality_failures": [row.one_line() for row in outcome.quality_failures],
        "quality": [asdict(row) for row in outcome.quality],
        "warnings": list(outcome.warnings),
        "record_key": record_key,
        "evidence": record.evidence if record else None,
        "reference": outcome.reference,
        "tables": list(outcome.tables),
    }


def drill_markdown(drill: dict[str, Any]) -> str:
    """The ``drill-<instance>`` artifact: verdict, RTO, data lag, phases, findings."""
    verdict = "PASSED" if drill["ok"] else "FAILED"
    lag = drill.get("data_lag_seconds")
    rows = [
        ("verdict", f"**{verdict}**"),
        ("database", f"{drill['database']} restored as {drill['scratch_name']}"),
        ("target", drill["target"] or "latest (the newest log backup)"),
        ("recoverable window", f"{drill.get('window_from') or '-'} .. "
                               f"{drill.get('window_to') or '-'}"),
        ("backups restored", " -> ".join(drill["backups"]) or "-"),
        ("RTO (plan + stage + restore)", f"{drill['rto_seconds']:.1f} s"),
        ("data lag (source now - newest backup)", "-" if lag is None else f"{lag:.0f} s"),
        ("expectations checked", str(drill.get("quality_checked", 0))),
        ("evidence", drill.get("evidence") or "-"),
    ]
    if drill.get("kept_at"):
        rows.append(("scratch database kept", drill["kept_at"]))
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    phases = "\n".join(f"| {k} | {v:.2f} s |" for k, v in drill["timings"].items())
    text = (f"## SQL Server recovery drill {drill['instance']}: {verdict}\n\n| | |\n|---|---|\n"
            f"{body}\n\n### Time by phase\n\n| phase | time |\n|---|---|\n{phases}\n")
    if drill["findings"]:
        text += "\n### Findings\n\n" + "\n".join(f"- {f}" for f in drill["findings"]) + "\n"
    if drill.get("warnings"):
        text += "\n### Warnings\n\n" + "\n".join(f"- {w}" for w in drill["warnings"]) + "\n"
    return text + verdicts_markdown(drill.get("reference", ""), drill.get("tables", []))


def info_text(data: dict[str, Any]) -> str:
    """`pitr info` for a SQL Server instance: backups, what was rejected, restorable spans,
    and the marked transactions a restore can name."""
    lines = [f"instance {data['instance']} (SQL Server)"]
    if not data["backups"]:
        lines.append("  no backups")
    for b in data["backups"]:
        status = b["verify"]
        verified = ("verified ok" if status and status.get("ok") else
                    "VERIFY FAILED" if status else "not verified")
        lines.append(f"  {b['id']}  {b['type']:<12} {b['database']}  LSN {b['first_lsn']}.."
                     f"{b['last_lsn']}  {b['size_bytes']} bytes  [{verified}]")
    for r in data["rejected"]:
        lines.append(f"  {r['id']}  NOT A BACKUP: {r['reason']}")
    for database, spans in data["restorable"].items():
        if isinstance(spans, dict):
            lines.append(f"restorable {database}: nothing ({spans['problem']})")
            continue
        lines.append(f"restorable {database}: " + ", ".join(
            f"{span['from']} .. {span['to']}" for span in spans))
    for database, marks in data.get("marks", {}).items():
        for mark in marks:
            lines.append(f"mark {database}: {mark['name']!r} LSN {mark['lsn']}, committed "
                         f"{mark['time']} server local time, in {mark['backup']}")
    return "\n".join(lines)


def backup_markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {result[k]} |" for k in (
        "id", "type", "database", "backup_set_id", "first_lsn", "last_lsn", "start_time",
        "stop_time", "size_bytes", "compression", "duration_seconds"))
    notes = "".join(f"\n> {n}\n" for n in result.get("notes", []))
    return (f"## SQL Server {result['type']} backup {result['id']}\n\n| | |\n|---|---|\n"
            f"{rows}\n{notes}")


def plan_markdown(prepared: PreparedRestore, statements: list[str]) -> str:
    """The restore-plan artifact: the plan as a table, then the T-SQL it runs."""
    from pitrflow.render import markdown_table

    plan = plan_dict(prepared, statements)
    rows = [("database", f"{plan['database']} restored as {plan['restore_as']}"
             + (" (replacing it)" if plan["replace"] else "")),
            ("target", plan["target"] or plan["target_text"]),
            ("STOPAT", f"{plan['stopat_local']} ({plan['stopat_time_zone']})"
             if plan["stopat_local"] else "-"),
            ("stop on each log", plan["stop"] or "-"),
            ("recovery fork", str(plan["recovery_fork"]))]
    rows += [(step["kind"], f"{step['backup']} (set {step['backup_set_id']}), LSN "
              f"{step['first_lsn']} .. {step['last_lsn']}, finished {step['finish']}")
             for step in plan["steps"]]
    rows.append(("staged", human_bytes(plan["stage_bytes"])))
    rows += [("reason", r) for r in plan["reasons"]]
    script = "\n".join(statements)
    return (markdown_table("SQL Server restore plan", rows)
            + f"\n### T-SQL\n\n```sql\n{script}\n```\n")
