"""The flows' stories, run without Prefect: what `pitr` does when no server is there.

Each function takes the same steps, in the same order, as the flow of the
same name in flows/ (whose tasks each wrap one of these engine calls), so a
run writes the same records to the repository either way.  Nothing here
imports Prefect: a restore needs only the repository, the config and the
binaries.  A change to a flow's steps belongs in both places; the tests
compare what each writes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pitrflow.config import Config
from pitrflow.engines.base import (
    BackupKind,
    BackupResult,
    CheckReport,
    DrillResult,
    ExpirePlan,
    ExpireResult,
    RestoreDestination,
    RestorePlan,
    RestoreResult,
    RestoreTarget,
    ShipResult,
    VerifyReport,
)
from pitrflow.engines.registry import engine_for
from pitrflow.errors import describe_error
from pitrflow.storage import open_repository
from pitrflow.storage.cleanup import execute_cleanup, plan_cleanup

log = logging.getLogger("pitrflow.local")


def backup(config: Config, instance: str, kind: BackupKind,
           allow_full_fallback: bool | None = None) -> BackupResult:
    """backup_full / backup_incremental: the backup, then retention, then clean-up."""
    engine, repo = engine_for(config, instance), open_repository(config.repository)
    result = engine.backup(repo, kind, allow_full_fallback)
    expire(config, instance)
    plan = plan_cleanup(repo, instance)
    if not plan.empty:
        execute_cleanup(repo, plan)
    return result


def ship(config: Config, instance: str) -> ShipResult:
    """ship_logs."""
    return engine_for(config, instance).ship(open_repository(config.repository))


def plan_restore(config: Config, instance: str, target: RestoreTarget,
                 destination: RestoreDestination) -> RestorePlan:
    """restore_to_point's first step, and all of a dry run."""
    engine = engine_for(config, instance)
    return engine.plan_restore(open_repository(config.repository), target, destination)


def restore(config: Config, plan: RestorePlan) -> RestoreResult:
    """restore_to_point's second step: carry out the plan."""
    engine = engine_for(config, plan.instance)
    return engine.restore(open_repository(config.repository), plan)


def drill(config: Config, instance: str, to: str, keep: bool) -> DrillResult:
    """recovery_drill: prepare, restore into the scratch destination, check, finish."""
    engine, repo = engine_for(config, instance), open_repository(config.repository)
    session = engine.prepare_drill(repo, to)
    restored: dict[str, Any] | None = None
    try:
        plan = engine.plan_restore(repo, session.target, session.destination)
        restored = engine.restore(repo, plan).data
    except Exception as exc:  # noqa: BLE001 - recorded; the drill then fails loudly
        session.record_error(f"restore failed: {describe_error(exc)}")
    if restored is not None:
        try:
            session.check_integrity(restored)
            session.check_quality(restored)
        except Exception as exc:  # noqa: BLE001 - recorded; the drill then fails loudly
            session.record_error(describe_error(exc))
    return session.finish(restored, keep)


def plan_expire(config: Config, instance: str) -> ExpirePlan:
    engine = engine_for(config, instance)
    return engine.plan_expire(open_repository(config.repository), datetime.now(UTC))


def expire(config: Config, instance: str, dry_run: bool = False
           ) -> tuple[ExpirePlan, ExpireResult | None]:
    """expire: the plan, and unless it is empty or a dry run, carrying it out."""
    engine, repo = engine_for(config, instance), open_repository(config.repository)
    plan = engine.plan_expire(repo, datetime.now(UTC))
    if dry_run or plan.empty:
        return plan, None
    return plan, engine.expire(repo, plan)


def verify(config: Config, instance: str, backup_id: str | None) -> VerifyReport:
    return engine_for(config, instance).verify(open_repository(config.repository), backup_id)


def check(config: Config, instance: str) -> CheckReport:
    engine = engine_for(config, instance)
    return engine.check(open_repository(config.repository), datetime.now(UTC))
