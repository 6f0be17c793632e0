"""The drill's steps as plain functions; the Prefect tasks wrap these one to one.

`prepare` draws the target, loads the baselines recorded around it and reads
the source as it is now; `quality` judges the restore against the source as
it was at the target (pitrflow.drill.bounds) and records, per table, the
reference, the bounds, the restored value and the verdict.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pitrflow.config import Config, InstanceConfig
from pitrflow.drill.baseline import Baseline
from pitrflow.drill.bounds import BoundSettings, DrillReference, plan_reference
from pitrflow.drill.history import Neighbourhood, StoredBaseline, load_neighbourhood
from pitrflow.drill.record import DrillRecord, store_evidence, store_record
from pitrflow.drill.verdicts import table_verdicts
from pitrflow.engines.postgres.binaries import find_binaries, reachable_for
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.connection import connect
from pitrflow.engines.postgres.drill.access import ScratchAccess, open_access
from pitrflow.engines.postgres.drill.baseline_source import read_baseline
from pitrflow.engines.postgres.drill.integrity import IntegrityReport, check_integrity
from pitrflow.engines.postgres.drill.target import DrillTarget, choose_target
from pitrflow.engines.postgres.restore.executor import stop_instance
from pitrflow.engines.postgres.sql import server_now
from pitrflow.engines.postgres.sysuser import needs_run_as
from pitrflow.storage import open_repository

log = logging.getLogger("pitrflow.drill")


@dataclass
class DrillContext:
    instance: str
    record: DrillRecord
    target: DrillTarget
    scratch: Path
    evidence_dir: Path
    live: Baseline | None = None
    neighbourhood: Neighbourhood = field(default_factory=Neighbourhood)
    reference: DrillReference | None = None


def read_live(settings: InstanceConfig) -> Baseline:
    """The source as it is now, every table counted exactly (the old reference)."""
    with connect(settings) as conn:
        live = read_baseline(conn, instance=settings.name, origin="live", origin_id="",
                             origin_time=datetime.now(UTC), freshness={},
                             exact_limit_bytes=None, statement_timeout="0")
    return replace(live, origin_time=live.read_from)


def prepare(config: Config, instance: str, spec: str) -> DrillContext:
    settings = config.instance(instance)
    repo = open_repository(config.repository)
    catalog = read_catalog(repo, instance)
    target = choose_target(catalog, spec)
    started = datetime.now(UTC)
    record = DrillRecord(instance=instance, started=started, target_mode=target.mode,
                         target_time=target.time, window_from=target.window_from,
                         window_to=target.window_to)
    reference_time = target.time or target.window_to
    neighbourhood = Neighbourhood()
    if reference_time is not None:
        stored = [StoredBaseline(b.key, b.time) for b in catalog.baselines]
        neighbourhood = load_neighbourhood(repo, stored, reference_time)
        for problem in neighbourhood.problems:
            log.warning("%s", problem)
    # For `latest` the source is read after the restore instead (judge_against).
    live = read_live(settings) if target.time is not None else None
    with connect(settings) as conn:
        source_now = server_now(conn)
    if target.window_to is not None:
        record.data_lag_seconds = (source_now - target.window_to).total_seconds()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    base = settings.drill.scratch_dir
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    return DrillContext(instance, record, target, base / f"{instance}-{stamp}",
                        base / f"{instance}-{stamp}-evidence", live, neighbourhood)


def _access(settings: InstanceConfig, restored: dict[str, Any]) -> ScratchAccess:
    return open_access(Path(restored["socket_dir"]), int(restored["port"]), settings.user)


def integrity(config: Config, ctx: DrillContext, restored: dict[str, Any]) -> IntegrityReport:
    settings = config.instance(ctx.instance)
    access = _access(settings, restored)
    major = int(restored["server_version"]) // 10000
    bins = find_binaries(major, settings.bin_dir, needs=("pg_amcheck", "pg_dump"))
    return check_integrity(access, bins, None, settings.drill.timeout_seconds)


def judge_against(config: Config, ctx: DrillContext) -> DrillReference:
    """What the restore is judged against: the baselines either side of the target.

    For `latest` the restore may have reached a mark newer than the one
    `prepare` saw, so the source is read again now, after the restore, to
    stand for "after", and only baselines before the older mark are used.
    """
    from pitrflow.quality.generate import POSTGRES_AWARE_TYPES, check_freshness_config

    settings = config.instance(ctx.instance)
    drill = settings.drill
    latest = ctx.target.time is None
    live = read_live(settings) if latest or ctx.live is None else ctx.live
    when = ctx.target.time or ctx.target.window_to or live.read_from
    candidates = list(ctx.neighbourhood.candidates)
    if latest:
        candidates = [b for b in candidates if b.read_to <= when]
    fresh = check_freshness_config(drill.freshness, live.tables, POSTGRES_AWARE_TYPES)
    bounds = BoundSettings(drill.row_count_tolerance, fresh,
                           timedelta(seconds=drill.max_lag_seconds))
    return plan_reference(when, candidates, live, bounds, oldest=ctx.neighbourhood.oldest)


def quality(config: Config, ctx: DrillContext, restored: dict[str, Any]) -> Any:
    from pitrflow.quality.generate import suites_from_plan
    from pitrflow.quality.run_gx import run_suites
    from pitrflow.quality.suites import load_team_suites

    settings = config.instance(ctx.instance)
    checks_dir = settings.drill.checks_dir or (config.source.parent / "checks")
    suites = load_team_suites(checks_dir, ctx.instance)
    ctx.reference = judge_against(config, ctx)
    ctx.record.reference = ctx.reference.statement
    suites += suites_from_plan(ctx.reference.tables)
    access = _access(settings, restored)
    ctx.evidence_dir.mkdir(parents=True, exist_ok=True)
    report = run_suites(access.sqlalchemy_url(settings.database), suites, ctx.evidence_dir)
    ctx.record.tables = table_verdicts(ctx.reference, report.rows)
    return report


def teardown(config: Config, ctx: DrillContext, restored: dict[str, Any] | None,
             keep: bool) -> str | None:
    """Stop and remove the scratch instance; returns where it was kept, if it was."""
    settings = config.instance(ctx.instance)
    failed = not ctx.record.passed
    if keep or (failed and settings.drill.keep_on_failure):
        if ctx.scratch.exists():
            log.info("keeping the scratch instance in %s", ctx.scratch)
            return str(ctx.scratch)
    if (ctx.scratch / "postmaster.pid").exists():
        major = int(restored["server_version"]) // 10000 if restored else 18
        run_as = settings.run_as if needs_run_as() else None
        bins = reachable_for(find_binaries(major, settings.bin_dir, exact=True,
                                           needs=("pg_ctl",)), run_as)
        stop_instance(ctx.scratch, bins, run_as)
    shutil.rmtree(ctx.scratch, ignore_errors=True)
    return None


def persist(config: Config, ctx: DrillContext) -> tuple[str, str | None]:
    repo = open_repository(config.repository)
    evidence = None
    if ctx.evidence_dir.exists():
        evidence = store_evidence(repo, ctx.record, ctx.evidence_dir)
        ctx.record.evidence = f"{repo.describe()}/{evidence}"
    key = store_record(repo, ctx.record)
    return key, evidence
