"""Tasks that take backups: one engine call each, published as the backup artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from tasks import events
from tasks.runtime import (
    core_logs_to_run_log,
    engine_of,
    flow_result,
    progress_artifact,
    publish,
    retry_transient,
)


@task(name="take-full-backup", retries=1, retry_delay_seconds=30,
      retry_condition_fn=retry_transient, cache_policy=NONE)
def take_full_backup(instance: str, config_path: str | None) -> dict[str, Any]:
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log(), progress_artifact("backup", instance,
                                                   f"full backup of {instance}"):
        result = engine.backup(repo, "full")
    publish(result, f"full backup of {instance}")
    events.backup_completed(result, engine.name)
    return flow_result(result)


@task(name="take-incremental-backup", retries=1, retry_delay_seconds=30,
      retry_condition_fn=retry_transient, cache_policy=NONE)
def take_incremental_backup(instance: str, config_path: str | None,
                            allow_full_fallback: bool | None) -> dict[str, Any]:
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log(), progress_artifact("backup", instance,
                                                   f"incremental backup of {instance}"):
        result = engine.backup(repo, "incremental", allow_full_fallback)
    publish(result, f"incremental backup of {instance}")
    events.backup_completed(result, engine.name)
    return flow_result(result)
