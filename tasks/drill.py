"""Tasks of the nightly recovery drill, for every engine: prepare, check, finish."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from pitrflow.engines.base import DrillSession
from pitrflow.render import artifact_key
from tasks import events
from tasks.runtime import core_logs_to_run_log, engine_of, flow_result, publish


@task(name="prepare-drill", cache_policy=NONE)
def prepare_drill(instance: str, to: str, config_path: str | None) -> DrillSession:
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log():
        return engine.prepare_drill(repo, to)


@task(name="check-integrity", cache_policy=NONE)
def check_physical_integrity(session: DrillSession, restored: dict[str, Any]) -> list[str]:
    with core_logs_to_run_log():
        return session.check_integrity(restored)


@task(name="check-data-quality", cache_policy=NONE)
def check_data_quality(session: DrillSession, restored: dict[str, Any]) -> list[dict[str, Any]]:
    with core_logs_to_run_log():
        table = session.check_quality(restored)
    create_table_artifact(table=table, key=artifact_key("drill-checks", session.instance),
                          description=f"Great Expectations results of the drill of "
                                      f"{session.instance}")
    return table


@task(name="finish-drill", cache_policy=NONE)
def finish_drill(session: DrillSession, restored: dict[str, Any] | None,
                 keep: bool) -> dict[str, Any]:
    """Tear down, store the record and evidence, publish, and fail loudly if it failed."""
    with core_logs_to_run_log():
        result = session.finish(restored, keep)
    publish(result, f"recovery drill of {session.instance}")
    events.drill_finished(result)
    failure = result.failure()
    if failure is not None:
        raise failure
    return flow_result(result)
