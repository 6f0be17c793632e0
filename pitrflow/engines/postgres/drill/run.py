"""The drill's steps as plain functions; the Prefect tasks wrap these one to one."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitrflow.config import Config, InstanceConfig
from pitrflow.drill.record import DrillRecord, store_evidence, store_record
from pitrflow.engines.postgres.binaries import find_binaries, reachable_for
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.connection import connect
from pitrflow.engines.postgres.drill.access import ScratchAccess, open_access
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
    source_tables: list[Any] = field(default_factory=list)


def prepare(config: Config, instance: str, spec: str) -> DrillContext:
    settings = config.instance(instance)
    repo = open_repository(config.repository)
    catalog = read_catalog(repo, instance)
    target = choose_target(catalog, spec)
    started = datetime.now(UTC)
    record = DrillRecord(instance=instance, started=started, target_mode=target.mode,
                         target_time=target.time, window_from=target.window_from,
                         window_to=target.window_to)
    from pitrflow.engines.postgres.drill.facts import read_source_catalog

    with connect(settings) as conn:
        tables = read_source_catalog(conn)
        source_now = server_now(conn)
    if target.window_to is not None:
        record.data_lag_seconds = (source_now - target.window_to).total_seconds()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    base = settings.drill.scratch_dir
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    return DrillContext(instance, record, target, base / f"{instance}-{stamp}",
                        base / f"{instance}-{stamp}-evidence", tables)


def _access(settings: InstanceConfig, restored: dict[str, Any]) -> ScratchAccess:
    return open_access(Path(restored["socket_dir"]), int(restored["port"]), settings.user)


def integrity(config: Config, ctx: DrillContext, restored: dict[str, Any]) -> IntegrityReport:
    settings = config.instance(ctx.instance)
    access = _access(settings, restored)
    major = int(restored["server_version"]) // 10000
    bins = find_binaries(major, settings.bin_dir, needs=("pg_amcheck", "pg_dump"))
    return check_integrity(access, bins, None, settings.drill.timeout_seconds)


def quality(config: Config, ctx: DrillContext, restored: dict[str, Any]) -> Any:
    from pitrflow.quality.generate import generate_suites
    from pitrflow.quality.run_gx import run_suites
    from pitrflow.quality.suites import load_team_suites

    settings = config.instance(ctx.instance)
    drill = settings.drill
    checks_dir = drill.checks_dir or (config.source.parent / "checks")
    suites = load_team_suites(checks_dir, ctx.instance)
    reference = ctx.target.time or ctx.target.window_to or datetime.now(UTC)
    from datetime import timedelta

    suites += generate_suites(ctx.source_tables, drill.row_count_tolerance, drill.freshness,
                              reference, timedelta(seconds=drill.max_lag_seconds))
    access = _access(settings, restored)
    ctx.evidence_dir.mkdir(parents=True, exist_ok=True)
    return run_suites(access.sqlalchemy_url(), suites, ctx.evidence_dir)


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
