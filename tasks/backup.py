"""Tasks that take base backups."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from pitrflow.config import Config
from pitrflow.engines.postgres.backup.basebackup import BackupOutcome, take_backup
from pitrflow.engines.postgres.backup.incremental import take_incremental
from pitrflow.engines.postgres.render import backup_dict, backup_markdown
from pitrflow.render import artifact_key
from pitrflow.storage import open_repository
from tasks.runtime import config_for, core_logs_to_run_log, retry_transient


def _publish(outcome: BackupOutcome, instance: str, what: str) -> dict[str, Any]:
    create_markdown_artifact(markdown=backup_markdown(outcome, list(outcome.notes)),
                             key=artifact_key("backup", instance),
                             description=f"{what} backup of {instance}")
    return {**backup_dict(outcome.manifest), "notes": list(outcome.notes)}


def _sqlserver_backup(config: Config, instance: str, kind: str,
                      allow_full_fallback: bool | None = None) -> dict[str, Any]:
    from pitrflow.engines.sqlserver.ops import sqlserver_backup

    with core_logs_to_run_log():
        result = sqlserver_backup(config.instance(instance), open_repository(config.repository),
                                  kind, allow_full_fallback)
    rows = "\n".join(f"| {k} | {result[k]} |" for k in (
        "id", "type", "database", "backup_set_id", "first_lsn", "last_lsn", "start_time",
        "stop_time", "size_bytes", "compression", "duration_seconds"))
    notes = "".join(f"\n> {n}\n" for n in result.get("notes", []))
    create_markdown_artifact(
        markdown=f"## SQL Server {result['type']} backup {result['id']}\n\n| | |\n|---|---|\n"
                 f"{rows}\n{notes}",
        key=artifact_key("backup" if kind != "log" else "ship", instance),
        description=f"SQL Server {kind} backup of {instance}")
    return result


@task(name="take-full-backup", retries=1, retry_delay_seconds=30,
      retry_condition_fn=retry_transient, cache_policy=NONE)
def take_full_backup(instance: str, config_path: str | None) -> dict[str, Any]:
    config = config_for(config_path)
    if config.instance(instance).engine == "sqlserver":
        return _sqlserver_backup(config, instance, "full")
    with core_logs_to_run_log():
        outcome = take_backup(config.instance(instance), open_repository(config.repository))
    return _publish(outcome, instance, "full")


@task(name="take-incremental-backup", retries=1, retry_delay_seconds=30,
      retry_condition_fn=retry_transient, cache_policy=NONE)
def take_incremental_backup(instance: str, config_path: str | None,
                            allow_full_fallback: bool | None) -> dict[str, Any]:
    config = config_for(config_path)
    settings = config.instance(instance)
    if settings.engine == "sqlserver":
        return _sqlserver_backup(config, instance, "incremental", allow_full_fallback)
    allow = settings.incremental_fallback if allow_full_fallback is None else allow_full_fallback
    with core_logs_to_run_log():
        outcome = take_incremental(settings, open_repository(config.repository), allow)
    return _publish(outcome, instance, "incremental")
