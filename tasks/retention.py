"""The expire task: plan, publish the plan, delete (PostgreSQL or SQL Server)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from pitrflow.config import Config
from pitrflow.engines.postgres.catalog.ops import expire
from pitrflow.engines.postgres.render import expire_markdown
from pitrflow.engines.sqlserver import maintenance as sqlserver
from pitrflow.render import locked_rows
from pitrflow.storage import open_repository
from tasks.backup import artifact_key
from tasks.runtime import config_for, core_logs_to_run_log, retry_transient


@task(name="expire-backups", retries=2, retry_delay_seconds=30,
      retry_condition_fn=retry_transient, cache_policy=NONE)
def expire_backups(instance: str, config_path: str | None, dry_run: bool = False
                   ) -> dict[str, Any]:
    config = config_for(config_path)
    if config.instance(instance).engine == "sqlserver":
        return _expire_sqlserver(instance, config, dry_run)
    with core_logs_to_run_log():
        plan, result = expire(config.instance(instance), open_repository(config.repository),
                              dry_run)
    create_markdown_artifact(markdown=expire_markdown(plan, result is not None, result),
                             key=artifact_key("expire", instance),
                             description=f"retention of {instance}")
    return {"deleted_backups": result.backups_deleted if result else [],
            "locked": locked_rows(result.locked) if result else [],
            "planned_deletions": plan.delete_backups, "kept": plan.kept_backups,
            "wal_deleted": result.wal_deleted if result else 0,
            "bytes_freed": result.bytes_freed if result else 0}


def _expire_sqlserver(instance: str, config: Config, dry_run: bool) -> dict[str, Any]:
    with core_logs_to_run_log():
        plan, result = sqlserver.sqlserver_expire(config.instance(instance),
                                                  open_repository(config.repository), dry_run)
    create_markdown_artifact(markdown=sqlserver.expire_markdown(plan, result is not None,
                                                                result),
                             key=artifact_key("expire", instance),
                             description=f"retention of {instance}")
    return sqlserver.expire_summary(plan, result)


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
