"""Tasks that plan and carry out restores, for every engine."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from pitrflow.engines.base import RestoreDestination, RestorePlan, RestoreTarget
from tasks.runtime import core_logs_to_run_log, engine_of, flow_result, progress_artifact, publish


@task(name="plan-restore", cache_policy=NONE)
def make_restore_plan(instance: str, target: RestoreTarget, destination: RestoreDestination,
                      config_path: str | None) -> RestorePlan:
    """Plan and check the destination; a refusal here has changed nothing."""
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log():
        plan = engine.plan_restore(repo, target, destination)
    publish(plan, f"restore plan for {instance}")
    return plan


# No retries: once files are written a blind retry would meet a non-empty directory.
@task(name="restore-instance", cache_policy=NONE)
def restore_instance(plan: RestorePlan, config_path: str | None) -> dict[str, Any]:
    engine, repo = engine_of(plan.instance, config_path)
    with core_logs_to_run_log(), progress_artifact("restore", plan.instance,
                                                   f"restore of {plan.instance}"):
        result = engine.restore(repo, plan)
    publish(result, f"restore of {plan.instance}")
    return flow_result(result)
