"""One PostgreSQL recovery drill as the steps a flow (or the CLI) runs one by one.

Prepare (target, source facts, scratch paths), then the caller restores with
the ordinary restore path into `destination`, then integrity and quality
checks, then `finish`: tear down, store the record and evidence, and the verdict.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pitrflow.config import Config, InstanceConfig
from pitrflow.engines.base import DrillResult, RestoreDestination, RestoreTarget
from pitrflow.engines.postgres.drill import run
from pitrflow.render import drill_checks_table, drill_markdown
from pitrflow.storage.base import Repository


def drill_summary_text(result: dict[str, Any], location: str) -> str:
    """What `pitr drill` prints when a drill passed."""
    lag, rto = result.get("data_lag_seconds"), result.get("rto_seconds")
    verdict = "passed" if result["passed"] else "FAILED"
    lines = [f"drill of {result['instance']} {verdict}: target {result['target_mode']} "
             f"{result['target_time'] or '(newest mark)'}, "
             f"RTO {'-' if rto is None else f'{rto:.1f}'} s, "
             f"data lag {'-' if lag is None else f'{lag:.0f}'} s, "
             f"{result['quality_checked']} expectations checked",
             f"drill record: {location}/{result['record_key']}"]
    if result.get("evidence"):
        lines.append(f"evidence (GX data docs): {result['evidence']}")
    if result.get("kept_at"):
        lines.append(f"scratch instance kept at {result['kept_at']}")
    return "\n".join(lines)


class PostgresDrillSession:
    def __init__(self, config: Config, settings: InstanceConfig, repo: Repository,
                 ctx: run.DrillContext) -> None:
        self.config = config
        self.settings = settings
        self.repo = repo
        self.ctx = ctx
        self.instance = settings.name
        self.target = RestoreTarget(ctx.target.time)
        self.destination = RestoreDestination(pgdata=str(ctx.scratch), scratch=True)

    @classmethod
    def prepare(cls, config: Config, settings: InstanceConfig, repo: Repository,
                to: str) -> PostgresDrillSession:
        return cls(config, settings, repo, run.prepare(config, settings.name, to))

    def record_error(self, message: str) -> None:
        self.ctx.record.error = message

    def check_integrity(self, restored: dict[str, Any]) -> list[str]:
        report = run.integrity(self.config, self.ctx, restored)
        record = self.ctx.record
        record.integrity_findings = report.findings
        record.phases["amcheck"] = report.amcheck_seconds
        record.phases["pg_dump_read"] = report.dump_seconds
        return report.findings

    def check_quality(self, restored: dict[str, Any]) -> list[dict[str, Any]]:
        started = time.monotonic()
        report = run.quality(self.config, self.ctx, restored)
        record = self.ctx.record
        record.phases["quality_checks"] = time.monotonic() - started
        record.quality_checked = len(report.rows)
        record.quality_failures = [r.one_line() for r in report.failures]
        return drill_checks_table([asdict(r) for r in report.rows])

    def finish(self, restored: dict[str, Any] | None, keep: bool) -> DrillResult:
        ctx, record = self.ctx, self.ctx.record
        access = restored if restored is not None else None
        if access is not None:
            record.chain = list(access["chain"])
            record.wal_segments = int(access["wal_segments"])
            for name, seconds in access["phases"].items():
                record.phases.setdefault(name, seconds)
            record.rto_seconds = sum(access["phases"].values()) + record.phases.get("plan", 0.0)
        kept = run.teardown(self.config, ctx, access, keep)
        record.kept_at = kept
        record.finished = datetime.now(UTC)
        key, _ = run.persist(self.config, ctx)
        shutil.rmtree(ctx.evidence_dir, ignore_errors=True)
        summary = {**record.to_dict(), "record_key": key}
        problems = record.integrity_findings + record.quality_failures
        if record.error:
            problems.insert(0, record.error)
        if not problems and record.quality_checked == 0:
            problems.append("no expectation was checked")
        return DrillResult(
            instance=self.instance, artifact="drill",
            text=drill_summary_text(summary, self.config.repository.location),
            markdown=drill_markdown(record, kept), data=summary, passed=record.passed,
            problems=problems, record_key=key, evidence=record.evidence)
