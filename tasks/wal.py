"""The task that ships the transaction log (PostgreSQL: WAL; SQL Server: a log backup)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from tasks import events
from tasks.runtime import core_logs_to_run_log, engine_of, flow_result, publish, retry_transient


@task(name="ship-wal", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=retry_transient, cache_policy=NONE)
def ship_wal_segments(instance: str, config_path: str | None) -> dict[str, Any]:
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log():
        result = engine.ship(repo)
    publish(result, f"log shipping of {instance}")
    events.wal_shipped(result, engine.name)
    return flow_result(result)


@task(name="follow-wal", cache_policy=NONE)
def follow_wal_stream(instance: str, config_path: str | None) -> dict[str, Any]:
    """Follow mode: no retries here; the deployment's schedule restarts an ended follower."""
    engine, repo = engine_of(instance, config_path)
    with core_logs_to_run_log():
        result = engine.follow(repo)
    return flow_result(result)
