"""Tasks that plan and carry out restores."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.render import (
    plan_dict,
    plan_markdown,
    restore_markdown,
    restore_text,
)
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore, preflight
from pitrflow.engines.postgres.restore.planner import RestorePlan, RestoreTarget, plan_restore
from pitrflow.storage import open_repository
from tasks.backup import artifact_key
from tasks.runtime import config_for, core_logs_to_run_log


@task(name="plan-restore", cache_policy=NONE)
def make_restore_plan(instance: str, target_time: datetime | None,
                      config_path: str | None) -> RestorePlan:
    config = config_for(config_path)
    catalog = read_catalog(open_repository(config.repository), instance)
    plan = plan_restore(catalog, RestoreTarget(target_time))
    create_markdown_artifact(markdown=plan_markdown(plan),
                             key=artifact_key("restore-plan", instance),
                             description=f"restore plan for {instance}")
    return plan


@task(name="check-restore-target", cache_policy=NONE)
def check_restore_target(plan: RestorePlan, instance: str, pgdata: str, port: int | None,
                         config_path: str | None, delta: bool = False,
                         delta_trust_mtime: bool = False) -> dict[str, Any]:
    config = config_for(config_path)
    request = RestoreRequest(config.instance(instance), Path(pgdata), port,
                             config_file=config.source, delta=delta,
                             delta_trust_mtime=delta_trust_mtime)
    checks = preflight(plan, request)
    return {"port": checks.port, "free_bytes": checks.free_bytes, "plan": plan_dict(plan)}


# No retries: once files are written a blind retry would meet a non-empty directory.
@task(name="restore-instance", cache_policy=NONE)
def restore_instance(plan: RestorePlan, instance: str, pgdata: str, port: int | None,
                     config_path: str | None, scratch: bool = False, delta: bool = False,
                     delta_trust_mtime: bool = False) -> dict[str, Any]:
    config = config_for(config_path)
    request = RestoreRequest(config.instance(instance), Path(pgdata), port,
                             config_file=config.source, scratch=scratch, delta=delta,
                             delta_trust_mtime=delta_trust_mtime)
    with core_logs_to_run_log():
        outcome = execute_restore(plan, request, open_repository(config.repository))
    create_markdown_artifact(markdown=restore_markdown(outcome),
                             key=artifact_key("restore", instance),
                             description=f"restore of {instance}")
    return {
        "pgdata": str(outcome.pgdata), "port": outcome.port,
        "socket_dir": str(outcome.socket_dir), "run_as": outcome.run_as,
        "last_transaction": outcome.last_transaction, "phases": outcome.phases,
        "chain": [b.id for b in plan.chain], "wal_segments": len(plan.wal),
        "server_version": plan.backup.server_version,
        "summary": restore_text(outcome),
    }


def instance_engine(instance: str, config_path: str | None) -> str:
    return config_for(config_path).instance(instance).engine


@task(name="restore-sqlserver-database", cache_policy=NONE)
def restore_sqlserver_database(instance: str, target_time: datetime | None,
                               database_name: str | None, replace: bool, dry_run: bool,
                               config_path: str | None) -> dict[str, Any]:
    """SQL Server: plan from the repository, show the T-SQL, and (unless dry) run it."""
    from pitrflow.engines.sqlserver.ops import sqlserver_plan_text, sqlserver_restore

    config = config_for(config_path)
    settings = config.instance(instance)
    repo = open_repository(config.repository)
    text, statements = sqlserver_plan_text(settings, repo, target_time, database_name, replace)
    create_markdown_artifact(markdown=f"## SQL Server restore plan\n\n```\n{text}\n```\n",
                             key=artifact_key("restore-plan", instance),
                             description=f"restore plan and T-SQL for {instance}")
    if dry_run:
        return {"dry_run": True, "plan": text, "statements": statements}
    with core_logs_to_run_log():
        result = sqlserver_restore(settings, repo, target_time, database_name, replace)
    create_markdown_artifact(markdown=f"## SQL Server restore\n\n{result['connect_hint']}\n",
                             key=artifact_key("restore", instance),
                             description=f"restore of {instance}")
    return result
