"""The SQL Server recovery drill: restore under a scratch name, check it, drop it.

It restores through the same ``prepare_restore``/``execute_restore`` a user's
restore uses, so a passing drill proves that path.  ``DBCC CHECKDB ... WITH
NO_INFOMSGS, ALL_ERRORMSGS`` prints nothing for a sound database, so every
message it sends, and any error it raises, is a finding.  The scratch database is
dropped afterwards unless ``keep`` is set; a drop that fails is a finding too,
because a forgotten copy of production data is a problem of its own.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pitrflow.config import InstanceConfig
from pitrflow.engines.sqlserver.catalog import read_sqlserver_catalog
from pitrflow.engines.sqlserver.connection import SqlExecutor, open_session
from pitrflow.engines.sqlserver.restore import (
    DATABASE_EXISTS_SQL,
    PreparedRestore,
    execute_restore,
    prepare_restore,
)
from pitrflow.engines.sqlserver.tsql import quote_name
from pitrflow.errors import PitrError
from pitrflow.storage.base import Repository

_STAMP = "%Y%m%dT%H%M%SZ"


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
    """The verdict, the findings that decide it, and what each phase cost."""

    instance: str
    database: str
    scratch_name: str
    target_utc: datetime | None
    findings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    kept: bool = False
    backups: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def rto_seconds(self) -> float:
        """Time to a usable database: plan, staging and restore (checks excluded)."""
        return round(sum(self.timings.get(k, 0.0) for k in ("plan", "stage", "restore")), 3)


def run_drill(
    instance: InstanceConfig,
    repo: Repository,
    target: datetime | None,
    name: str | None = None,
    keep: bool = False,
    now: datetime | None = None,
) -> SqlServerDrillOutcome:
    """Restore to ``target`` (None: the latest) under a scratch name and check it."""
    when = now or datetime.now(UTC)
    clock = time.monotonic()
    prepared = prepare_restore(instance, read_sqlserver_catalog(repo, instance.name), target,
                               new_name=name or scratch_name(instance.database, when), now=when)
    outcome = SqlServerDrillOutcome(
        instance=instance.name, database=instance.database, scratch_name=prepared.new_name,
        target_utc=prepared.plan.target_utc, backups=[r.id for r in prepared.records],
    )
    outcome.timings["plan"] = round(time.monotonic() - clock, 3)
    with open_session(instance) as sql:
        try:
            restored = execute_restore(prepared, repo, sql)
        except PitrError as exc:
            outcome.findings.append(f"restore failed: {exc.message}")
            return outcome
        outcome.timings.update(restored.timings)
        try:
            _check(sql, prepared, outcome)
        finally:
            if keep:
                outcome.kept = True
            else:
                _drop(sql, prepared.new_name, outcome)
    return outcome


def _check(sql: SqlExecutor, prepared: PreparedRestore, outcome: SqlServerDrillOutcome) -> None:
    clock = time.monotonic()
    try:
        result = sql.run(checkdb_sql(prepared.new_name),
                         what=f"DBCC CHECKDB of {prepared.new_name}")
        outcome.findings.extend(f"checkdb: {m}" for m in result.messages)
    except PitrError as exc:
        messages = getattr(exc, "messages", [])
        outcome.findings.extend(f"checkdb: {m}" for m in messages)
        outcome.findings.append(f"checkdb: {exc.message}")
    outcome.timings["checkdb"] = round(time.monotonic() - clock, 3)


def _drop(sql: SqlExecutor, database: str, outcome: SqlServerDrillOutcome) -> None:
    clock = time.monotonic()
    try:
        if sql.scalar(DATABASE_EXISTS_SQL, [database]) is not None:
            for statement in drop_database_sql(database):
                sql.run(statement, what=f"drop of scratch database {database}")
    except PitrError as exc:
        outcome.findings.append(f"scratch database {database} was not dropped: {exc.message}")
        with contextlib.suppress(PitrError):
            sql.run(f"ALTER DATABASE {quote_name(database)} SET MULTI_USER")
    outcome.timings["drop"] = round(time.monotonic() - clock, 3)
