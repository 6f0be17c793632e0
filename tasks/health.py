"""Tasks that re-read backups (verify) and check the whole setup (check), for every engine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from tasks import events
from tasks.runtime import core_logs_to_run_log, engine_of, publish


@task(name="verify-backups", cache_policy=NONE)
def verify_backups(instance: str, backup_id: str | None,
                   config_path: str | None) -> list[dict[str, Any]]:
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log():
        report = engine.verify(repo, backup_id)
    publish(report, f"verify of {instance}")
    failure = report.failure()
    if failure is not None:
        raise failure
    results: list[dict[str, Any]] = report.data["results"]
    return results


@task(name="check-instance", cache_policy=NONE)
def check_instance(instance: str, config_path: str | None) -> list[dict[str, Any]]:
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log():
        report = engine.check(repo, datetime.now(UTC))
    publish(report, f"health check of {instance}")
    failure = report.failure()
    if failure is not None:
        events.check_failed(report, engine.name)
        raise failure
    checks: list[dict[str, Any]] = report.data["checks"]
    return checks
