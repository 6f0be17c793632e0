"""The expire task (plan, publish the plan, delete) and the repository clean-up task."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from pitrflow.storage import open_repository
from tasks.runtime import (
    config_for,
    core_logs_to_run_log,
    engine_of,
    flow_result,
    publish,
    retry_transient,
)


@task(name="expire-backups", retries=2, retry_delay_seconds=30,
      retry_condition_fn=retry_transient, cache_policy=NONE)
def expire_backups(instance: str, config_path: str | None, dry_run: bool = False
                   ) -> dict[str, Any]:
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log():
        plan = engine.plan_expire(repo, datetime.now(UTC))
        if dry_run or plan.empty:
            publish(plan, f"retention of {instance}")
            return flow_result(plan)
        result = engine.expire(repo, plan)
    publish(result, f"retention of {instance}")
    return flow_result(result)


@task(name="clean-repository", retries=2, retry_delay_seconds=30,
      retry_condition_fn=retry_transient, cache_policy=NONE)
def clean_repository(instance: str, config_path: str | None) -> dict[str, Any]:
    """Remove what interrupted runs left (objects no manifest names, stale uploads)."""
    from pitrflow.storage.cleanup import execute_cleanup, plan_cleanup

    config = config_for(config_path)
    repo = open_repository(config.repository)
    with core_logs_to_run_log():
        plan = plan_cleanup(repo, instance)
        result = execute_cleanup(repo, plan) if not plan.empty else None
    return {"removed": result.removed if result else [],
            "aborted": result.aborted if result else []}
