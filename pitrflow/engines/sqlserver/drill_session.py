"""One SQL Server recovery drill as steps: prepare, (restore), CHECKDB, GX suites, finish.

The restore between prepare and the checks is the ordinary restore under a
scratch name, so a drill proves exactly the path users rely on.  Each step
records what it found in the outcome; `finish` drops the scratch database
(unless kept), stores the drill record and evidence, and gives the verdict.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitrflow.config import InstanceConfig
from pitrflow.drill.baseline import Baseline
from pitrflow.drill.record import store_evidence, store_record
from pitrflow.engines.base import DrillResult, RestoreDestination, RestoreTarget
from pitrflow.engines.sqlserver import drill as steps
from pitrflow.engines.sqlserver.catalog import read_sqlserver_catalog
from pitrflow.engines.sqlserver.connection import open_session
from pitrflow.engines.sqlserver.render import drill_dict, drill_markdown
from pitrflow.engines.sqlserver.restore import PreparedRestore, prepare_restore
from pitrflow.quality.suites import Suite
from pitrflow.render import drill_checks_table
from pitrflow.storage.base import Repository


class SqlServerDrillSession:
    def __init__(self, settings: InstanceConfig, repo: Repository,
                 to: datetime | str | None, checks_dir: Path | None,
                 scratch_name: str | None = None, now: datetime | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.instance = settings.name
        when = now or datetime.now(UTC)
        clock = time.monotonic()
        catalog = read_sqlserver_catalog(repo, settings.name)
        if isinstance(to, datetime):
            mode, target = "time", to
        else:
            mode, target = steps.choose_target(catalog, settings.database, to)
        # Planned now, so a target no backup reaches is refused before anything runs.
        self.prepared: PreparedRestore = prepare_restore(
            settings, catalog, target,
            new_name=scratch_name or steps.scratch_name(settings.database, when), now=when)
        window_from, window_to = steps.recoverable_window(catalog, settings.database)
        self.outcome = steps.SqlServerDrillOutcome(
            instance=settings.name, database=settings.database,
            scratch_name=self.prepared.new_name, target_utc=self.prepared.plan.target_utc,
            started=when, window_from=window_from, window_to=window_to,
            backups=[r.id for r in self.prepared.records], target_mode=mode)
        self.outcome.timings["plan"] = round(time.monotonic() - clock, 3)
        self.target = RestoreTarget(target)
        self.destination = RestoreDestination(database_name=self.prepared.new_name,
                                              scratch=True)
        self.evidence_dir = Path(tempfile.mkdtemp(prefix=f"pitrflow-drill-{settings.name}-"))
        self.team: list[Suite] = steps.team_suites(checks_dir, settings.name, self.outcome)
        self.neighbourhood = steps.drill_neighbourhood(repo, settings, catalog, self.outcome)
        self.live: Baseline | None = None
        with open_session(settings) as sql:
            self.live = steps.source_facts(sql, settings, self.outcome)

    def record_error(self, message: str) -> None:
        self.outcome.errors.append(message)

    def check_integrity(self, restored: dict[str, Any]) -> list[str]:
        self.outcome.timings.update(restored.get("timings", {}))
        with open_session(self.settings) as sql:
            steps.check_integrity(sql, self.prepared, self.outcome)
        return list(self.outcome.integrity)

    def check_quality(self, restored: dict[str, Any]) -> list[dict[str, Any]]:
        steps.check_quality(self.settings, self.prepared, self.outcome, self.team, self.live,
                            self.evidence_dir, self.neighbourhood)
        return drill_checks_table([asdict(row) for row in self.outcome.quality])

    def finish(self, restored: dict[str, Any] | None, keep: bool) -> DrillResult:
        outcome, repo = self.outcome, self.repo
        try:
            if keep:
                outcome.kept = restored is not None
            else:
                with open_session(self.settings) as sql:
                    steps.drop(sql, self.prepared.new_name, outcome)
        finally:
            outcome.finished = datetime.now(UTC)
        kept_at = (f"database {outcome.scratch_name} on {self.settings.host},"
                   f"{self.settings.port}" if outcome.kept else None)
        record = steps.drill_record(outcome, kept_at)
        try:
            if any(path.is_file() for path in self.evidence_dir.rglob("*")):
                record.evidence = (f"{repo.describe()}/"
                                   f"{store_evidence(repo, record, self.evidence_dir)}")
            key = store_record(repo, record)
        finally:
            shutil.rmtree(self.evidence_dir, ignore_errors=True)
        data = drill_dict(outcome, record, key)
        return DrillResult(
            instance=self.instance, artifact="drill", text=_summary(data, repo.describe()),
            markdown=drill_markdown(data), data=data, passed=outcome.ok,
            problems=list(outcome.findings), record_key=key, evidence=record.evidence)


def _summary(result: dict[str, Any], location: str) -> str:
    lag = result["data_lag_seconds"]
    verdict = "passed" if result["ok"] else "FAILED"
    lines = [f"drill of {result['instance']} {verdict}: target {result['target_mode']} "
             f"{result['target'] or '(newest log backup)'}, RTO {result['rto_seconds']:.1f} s, "
             f"data lag {'-' if lag is None else f'{lag:.0f}'} s, "
             f"{result['quality_checked']} expectations checked, scratch database "
             f"{result['scratch_name']} {'kept' if result['kept'] else 'dropped'}",
             f"drill record: {location}/{result['record_key']}"]
    if result.get("evidence"):
        lines.append(f"evidence (GX data docs): {result['evidence']}")
    return "\n".join(lines)
