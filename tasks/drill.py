"""Tasks of the nightly recovery drill."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from pitrflow.engines.postgres.drill import run
from pitrflow.engines.postgres.drill.integrity import IntegrityReport
from pitrflow.errors import DrillFailedError
from pitrflow.render import drill_markdown
from tasks.backup import artifact_key
from tasks.runtime import config_for, core_logs_to_run_log


@task(name="prepare-drill", cache_policy=NONE)
def prepare_drill(instance: str, to: str, config_path: str | None) -> run.DrillContext:
    with core_logs_to_run_log():
        return run.prepare(config_for(config_path), instance, to)


@task(name="check-integrity", cache_policy=NONE)
def check_physical_integrity(ctx: run.DrillContext, restored: dict[str, Any],
                             config_path: str | None) -> IntegrityReport:
    with core_logs_to_run_log():
        report = run.integrity(config_for(config_path), ctx, restored)
    ctx.record.integrity_findings = report.findings
    ctx.record.phases["amcheck"] = report.amcheck_seconds
    ctx.record.phases["pg_dump_read"] = report.dump_seconds
    return report


@task(name="check-data-quality", cache_policy=NONE)
def check_data_quality(ctx: run.DrillContext, restored: dict[str, Any],
                       config_path: str | None) -> list[dict[str, Any]]:
    import time

    started = time.monotonic()
    with core_logs_to_run_log():
        report = run.quality(config_for(config_path), ctx, restored)
    ctx.record.phases["quality_checks"] = time.monotonic() - started
    ctx.record.quality_checked = len(report.rows)
    ctx.record.quality_failures = [r.one_line() for r in report.failures]
    table = _checks_table([asdict(r) for r in report.rows])
    create_table_artifact(table=table, key=artifact_key("drill-checks", ctx.instance),
                          description=f"Great Expectations results of the drill of {ctx.instance}")
    return table


def _checks_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The drill-checks-<instance> table, the same for both engines."""
    return [{"suite": r["suite"], "expectation": r["expectation_type"],
             "column": r["column"] or "", "result": "pass" if r["success"] else "FAIL",
             "observed": r["observed"], "expected": r.get("bounds", ""),
             "reference": r.get("baseline", "")}
            for r in rows]


@task(name="finish-drill", cache_policy=NONE)
def finish_drill(ctx: run.DrillContext, restored: dict[str, Any] | None, keep: bool,
                 config_path: str | None) -> dict[str, Any]:
    """Tear down, store the record and evidence, publish, and fail loudly if it failed."""
    from datetime import UTC, datetime

    config = config_for(config_path)
    if restored is not None:
        ctx.record.chain = list(restored["chain"])
        ctx.record.wal_segments = int(restored["wal_segments"])
        for name, seconds in restored["phases"].items():
            ctx.record.phases.setdefault(name, seconds)
        ctx.record.rto_seconds = sum(restored["phases"].values()) + ctx.record.phases.get(
            "plan", 0.0)
    with core_logs_to_run_log():
        kept = run.teardown(config, ctx, restored, keep)
        ctx.record.kept_at = kept
        ctx.record.finished = datetime.now(UTC)
        key, _ = run.persist(config, ctx)
    shutil.rmtree(ctx.evidence_dir, ignore_errors=True)
    create_markdown_artifact(markdown=drill_markdown(ctx.record, kept),
                             key=artifact_key("drill", ctx.instance),
                             description=f"recovery drill of {ctx.instance}")
    summary = {**ctx.record.to_dict(), "record_key": key}
    if not ctx.record.passed:
        problems = ctx.record.integrity_findings + ctx.record.quality_failures
        if ctx.record.error:
            problems.insert(0, ctx.record.error)
        if not problems and ctx.record.quality_checked == 0:
            problems.append("no expectation was checked")
        raise DrillFailedError(
            f"recovery drill of {ctx.instance} failed: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            f"see the drill artifact and the evidence in {ctx.record.evidence or key}")
    return summary


@task(name="sqlserver-drill", cache_policy=NONE)
def run_sqlserver_drill(instance: str, to: str, keep: bool,
                        config_path: str | None) -> dict[str, Any]:
    """SQL Server: restore under a scratch name, CHECKDB and GX suites, drop it; fail loudly."""
    from pitrflow.engines.sqlserver.ops import sqlserver_drill
    from pitrflow.engines.sqlserver.render import drill_markdown as sqlserver_drill_markdown
    from pitrflow.storage import open_repository
    config = config_for(config_path)
    settings = config.instance(instance)
    # The same team suites directory the PostgreSQL drill reads.
    checks_dir = settings.drill.checks_dir or (config.source.parent / "checks")
    with core_logs_to_run_log():
        result = sqlserver_drill(settings, open_repository(config.repository), to,
                                 keep=keep, checks_dir=checks_dir)
    create_markdown_artifact(markdown=sqlserver_drill_markdown(result),
                             key=artifact_key("drill", instance),
                             description=f"recovery drill of {instance}")
    create_table_artifact(table=_checks_table(result["quality"]),
                          key=artifact_key("drill-checks", instance),
                          description=f"Great Expectations results of the drill of {instance}")
    if not result["ok"]:
        problems = result["findings"]
        raise DrillFailedError(
            f"recovery drill of {instance} failed: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            f"see the drill artifact and the evidence in "
            f"{result['evidence'] or result['record_key']}")
    return result
