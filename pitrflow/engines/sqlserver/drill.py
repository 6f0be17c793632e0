"""The SQL Server recovery drill's steps: restore under a scratch name, check it, drop it.

``drill_session`` runs them in order, restoring through the same plan and
restore a user's restore uses, so a passing drill proves that path.  Two kinds
of checks:

- ``DBCC CHECKDB ... WITH NO_INFOMSGS, ALL_ERRORMSGS`` prints nothing for a sound
  database, so every message it sends, and any error it raises, is a finding;
- Great Expectations suites, run against the scratch copy through SQLAlchemy
  (``mssql+pyodbc``, the instance's own ODBC settings): the team's suites and test
  queries from ``checks/<instance>/`` plus suites generated against the source as it
  was at the target: the baselines recorded after the backups just before and just
  after it (``engines.sqlserver.baseline``, ``drill.bounds``) bound each row count and
  freshness column; with no baseline before the target, the facts read from the
  source now, with the old tolerance, and the record says so.
  Every failed expectation is a finding, and a drill that checked no expectation
  at all has not passed.

The scratch database is dropped afterwards unless ``keep`` is set; a drop that fails
is a finding too, because a forgotten copy of production data is a problem of its
own.  ``drill_record`` turns the outcome into the same ``DrillRecord`` the
PostgreSQL drill stores, so ``pitr info`` and ``pitr check`` read both alike.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pitrflow.config import InstanceConfig
from pitrflow.drill.baseline import Baseline, TableBaseline
from pitrflow.drill.bounds import BoundSettings, DrillReference, plan_reference
from pitrflow.drill.history import Neighbourhood, load_neighbourhood
from pitrflow.drill.record import DrillRecord
from pitrflow.drill.verdicts import table_verdicts
from pitrflow.engines.sqlserver.baseline import stored_baselines
from pitrflow.engines.sqlserver.catalog import (
    SqlServerCatalog,
)
from pitrflow.engines.sqlserver.connection import SqlExecutor, sqlalchemy_url
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.facts import AWARE_TYPES, read_source_facts, server_utc_now
from pitrflow.engines.sqlserver.msdb import row_times_utc
from pitrflow.engines.sqlserver.restore import (
    DATABASE_EXISTS_SQL,
    PreparedRestore,
)
from pitrflow.engines.sqlserver.tsql import quote_name
from pitrflow.engines.sqlserver.window import restorable_spans
from pitrflow.errors import PitrError
from pitrflow.quality.generate import TableFacts, check_freshness_config, suites_from_plan
from pitrflow.quality.run_gx import ResultRow
from pitrflow.quality.suites import Suite, load_team_suites
from pitrflow.secrets import instance_password
from pitrflow.storage.base import Repository
from pitrflow.times import parse_aware

log = logging.getLogger("pitrflow.sqlserver.drill")

_STAMP = "%Y%m%dT%H%M%SZ"
NOTHING_CHECKED = "no expectation was checked"


def checkdb_sql(database: str) -> str:
    """Every consistency error, and nothing else (no informational lines)."""
    return f"DBCC CHECKDB ({quote_name(database)}) WITH NO_INFOMSGS, ALL_ERRORMSGS"


def drop_database_sql(database: str) -> list[str]:
    """Sessions on the scratch copy are cut first, or DROP waits on them."""
    name = quote_name(database)
    return [f"ALTER DATABASE {name} SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
            f"DROP DATABASE {name}"]


def scratch_name(database: str, when: datetime) -> str:
    suffix = f"_drill_{when.astimezone(UTC).strftime(_STAMP)}"
    return database[: 128 - len(suffix)] + suffix


@dataclass
class SqlServerDrillOutcome:
    """The verdict, the findings that decide it, and what each phase cost.

    ``errors`` are problems that stopped a step (restore, source facts, suites,
    GX start, drop); ``integrity`` what CHECKDB reported; ``quality`` one row per
    expectation GX checked.
    """

    instance: str
    database: str
    scratch_name: str
    target_utc: datetime | None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    window_from: datetime | None = None
    window_to: datetime | None = None
    data_lag_seconds: float | None = None
    errors: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    quality: list[ResultRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    kept: bool = False
    backups: list[str] = field(default_factory=list)
    target_mode: str = ""
    reference: str = ""
    tables: list[dict[str, str]] = field(default_factory=list)

    @property
    def quality_failures(self) -> list[ResultRow]:
        return [row for row in self.quality if not row.success]

    @property
    def findings(self) -> list[str]:
        """Everything that fails the drill, most fundamental first."""
        found = [*self.errors, *(f"checkdb: {m}" for m in self.integrity),
                 *(row.one_line() for row in self.quality_failures)]
        if not found and not self.quality:
            found.append(NOTHING_CHECKED)
        return found

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def rto_seconds(self) -> float:
        """Time to a usable database: plan, staging and restore (checks excluded)."""
        return round(sum(self.timings.get(k, 0.0) for k in ("plan", "stage", "restore")), 3)


def drill_neighbourhood(repo: Repository, instance: InstanceConfig,
                       catalog: SqlServerCatalog, outcome: SqlServerDrillOutcome
                       ) -> Neighbourhood:
    """The baselines stored with the backups either side of the drill's target."""
    when = outcome.target_utc or outcome.window_to
    if when is None:
        return Neighbourhood()
    mine = [r for r in catalog.records if r.database == instance.database]
    neighbourhood = load_neighbourhood(repo, stored_baselines(repo, instance.name, mine), when)
    outcome.warnings.extend(neighbourhood.problems)
    return neighbourhood


def choose_target(catalog: SqlServerCatalog, database: str, spec: str | None,
                  rng: random.Random | None = None) -> tuple[str, datetime | None]:
    """``latest`` (None), ``random`` (uniform over the restorable moments), or an ISO time.

    Random draws from ``restorable_spans``, so the draw proves what the repository can
    restore; the gaps themselves are verify's and check's findings.
    """
    if spec in (None, "latest"):
        return "latest", None
    if spec != "random":
        return "time", parse_aware(spec, "drill target")
    spans = restorable_spans(catalog, database)
    total = sum((b - a).total_seconds() for a, b in spans)
    if not spans:
        raise SqlServerPlanError(f"no moment of {database} in its newest recovery fork can be "
                                 "restored", "run pitr verify for the gaps in the log chain")
    offset = (rng or random.SystemRandom()).uniform(0, total)
    for start, reach in spans:
        length = (reach - start).total_seconds()
        if offset <= length:
            return "random", start + timedelta(seconds=offset)
        offset -= length
    return "random", spans[-1][1]  # float rounding at the very end of the last span


def recoverable_window(catalog: SqlServerCatalog,
                       database: str) -> tuple[datetime | None, datetime | None]:
    """The oldest full's finish and the newest backup's finish of ``database``.

    The newest finish (normally a log backup's) is the latest point a restore can
    reach; the source's clock minus it is the data lag the drill reports.
    """
    fulls, finishes = [], []
    for record in catalog.records:
        if record.database != database:
            continue
        finish = row_times_utc(record.rows[0])[1]
        finishes.append(finish)
        if record.kind == "full":
            fulls.append(finish)
    return (min(fulls) if fulls else None), (max(finishes) if finishes else None)


def team_suites(checks_dir: Path | None, instance: str,
                 outcome: SqlServerDrillOutcome) -> list[Suite]:
    """Loaded before the restore: a malformed team suite is reported without waiting."""
    if checks_dir is None:
        return []
    try:
        return load_team_suites(checks_dir, instance)
    except ValueError as exc:
        outcome.errors.append(f"team suites not loaded: {exc}")
        return []


def source_facts(sql: SqlExecutor, instance: InstanceConfig,
                 outcome: SqlServerDrillOutcome) -> Baseline | None:
    """The source as it is now (the data lag, and the reference when no baseline serves);
    None (and a finding) if unread.

    A source that cannot be read does not stop the drill: the restore, CHECKDB and
    the team suites still say something about the backups.
    """
    clock = time.monotonic()
    try:
        read_from = server_utc_now(sql)
        facts = read_source_facts(sql, instance.database, instance.user)
        source_now = server_utc_now(sql)
    except PitrError as exc:
        outcome.errors.append(f"source database {instance.database} not read: {exc.message}"
                              + (f" ({exc.hint})" if exc.hint else ""))
        return None
    finally:
        outcome.timings["source_facts"] = round(time.monotonic() - clock, 3)
    if outcome.window_to is not None:
        outcome.data_lag_seconds = round((source_now - outcome.window_to).total_seconds(), 3)
    return live_baseline(instance.name, facts, read_from, source_now)


def live_baseline(instance: str, facts: list[TableFacts], read_from: datetime,
                  read_to: datetime) -> Baseline:
    """Facts counted now, in the shape of a baseline read at drill time."""
    return Baseline(
        instance=instance, engine="sqlserver", origin="live", origin_id="",
        origin_time=read_from, read_from=read_from, read_to=read_to,
        tables=tuple(TableBaseline(f.schema, f.table, exact=f.row_count,
                                   primary_key=f.primary_key, not_null=f.not_null,
                                   column_types=dict(f.column_types)) for f in facts))


def judge_against(instance: InstanceConfig, target_utc: datetime | None,
                  window_to: datetime | None, live: Baseline,
                  neighbourhood: Neighbourhood) -> DrillReference:
    """The baselines either side of the target (or the stated fallback), as in PostgreSQL.

    For the newest point (``target_utc`` None) the restore reaches the newest
    backup's end, which the source read now is after; only baselines before the
    window's end are used.
    """
    drill = instance.drill
    when = target_utc or window_to or live.read_from
    candidates = list(neighbourhood.candidates)
    if target_utc is None:
        candidates = [b for b in candidates if b.read_to <= when]
    fresh = check_freshness_config(drill.freshness, live.tables, AWARE_TYPES)
    bounds = BoundSettings(drill.row_count_tolerance, fresh,
                           timedelta(seconds=drill.max_lag_seconds))
    return plan_reference(when, candidates, live, bounds, oldest=neighbourhood.oldest)


def check_integrity(sql: SqlExecutor, prepared: PreparedRestore,
                    outcome: SqlServerDrillOutcome) -> None:
    clock = time.monotonic()
    try:
        result = sql.run(checkdb_sql(prepared.new_name),
                         what=f"DBCC CHECKDB of {prepared.new_name}")
        outcome.integrity.extend(result.messages)
    except PitrError as exc:
        outcome.integrity.extend(getattr(exc, "messages", []))
        outcome.integrity.append(exc.message)
    outcome.timings["checkdb"] = round(time.monotonic() - clock, 3)


def check_quality(instance: InstanceConfig, prepared: PreparedRestore,
                   outcome: SqlServerDrillOutcome, team: list[Suite],
                   live: Baseline | None, evidence_dir: Path | None,
                   neighbourhood: Neighbourhood) -> None:
    """Run the team and generated suites against the scratch copy with GX."""
    from pitrflow.quality.run_gx import QualityRunError, run_suites

    clock = time.monotonic()
    suites = list(team)
    reference = None
    try:
        if live is not None:
            reference = judge_against(instance, prepared.plan.target_utc, outcome.window_to,
                                      live, neighbourhood)
            outcome.reference = reference.statement
            suites += suites_from_plan(reference.tables)
        password = instance_password(instance)
        report = run_suites(sqlalchemy_url(instance, password, prepared.new_name), suites,
                            evidence_dir, secrets=[password] if password else [])
    except (ValueError, QualityRunError) as exc:
        outcome.errors.append(f"quality checks not run: {exc}")
    except PitrError as exc:
        outcome.errors.append(f"quality checks not run: {exc.message}")
    else:
        outcome.quality = report.rows
        outcome.warnings.extend(report.warnings)
        if reference is not None:
            outcome.tables = table_verdicts(reference, report.rows)
        log.info("quality checks of %s: %s", prepared.new_name, report.summary())
    outcome.timings["quality_checks"] = round(time.monotonic() - clock, 3)


def drop(sql: SqlExecutor, database: str, outcome: SqlServerDrillOutcome) -> None:
    clock = time.monotonic()
    try:
        if sql.scalar(DATABASE_EXISTS_SQL, [database]) is not None:
            for statement in drop_database_sql(database):
                sql.run(statement, what=f"drop of scratch database {database}")
    except PitrError as exc:
        outcome.errors.append(f"scratch database {database} was not dropped: {exc.message}")
        with contextlib.suppress(PitrError):
            sql.run(f"ALTER DATABASE {quote_name(database)} SET MULTI_USER")
    outcome.timings["drop"] = round(time.monotonic() - clock, 3)


def drill_record(outcome: SqlServerDrillOutcome, kept_at: str | None = None) -> DrillRecord:
    """The outcome in the shape every drill is stored in (``pitrflow.drill.record``).

    ``passed`` comes out equal to ``outcome.ok``: errors go to ``error``, CHECKDB's
    messages to ``integrity_findings``, failed expectations to ``quality_failures``,
    and nothing checked leaves ``quality_checked`` at 0.  ``wal_segments`` stays 0:
    the log backups restored are in ``chain`` (ids ending in ``-L``).
    """
    return DrillRecord(
        instance=outcome.instance,
        started=outcome.started,
        finished=outcome.finished,
        target_mode=outcome.target_mode or ("latest" if outcome.target_utc is None else "time"),
        target_time=outcome.target_utc,
        window_from=outcome.window_from,
        window_to=outcome.window_to,
        chain=list(outcome.backups),
        phases=dict(outcome.timings),
        rto_seconds=outcome.rto_seconds,
        data_lag_seconds=outcome.data_lag_seconds,
        integrity_findings=list(outcome.integrity),
        quality_failures=[row.one_line() for row in outcome.quality_failures],
        quality_checked=len(outcome.quality),
        error="; ".join(outcome.errors) or None,
        kept_at=kept_at,
        engine="sqlserver",
        reference=outcome.reference,
        tables=list(outcome.tables),
    )
