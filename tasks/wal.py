"""Tasks that ship WAL."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from pitrflow.engines.postgres.render import ship_markdown
from pitrflow.engines.postgres.wal.walnames import format_lsn
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.render import iso
from pitrflow.storage import open_repository
from tasks.backup import artifact_key
from tasks.runtime import config_for, core_logs_to_run_log, retry_transient


@task(name="ship-wal", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=retry_transient, cache_policy=NONE)
def ship_wal_segments(instance: str, config_path: str | None) -> dict[str, Any]:
    config = config_for(config_path)
    if config.instance(instance).engine == "sqlserver":
        from tasks.backup import _sqlserver_backup

        result = _sqlserver_backup(config, instance, "log")
        return {"mark_lsn": result["last_lsn"], "mark_time": result["stop_time"],
                "segments": [result["id"]], "lag_seconds": None, "slot_retained_bytes": None}
    with core_logs_to_run_log():
        outcome = ship_wal(config.instance(instance), open_repository(config.repository))
    create_markdown_artifact(markdown=ship_markdown(outcome), key=artifact_key("ship", instance),
                             description=f"WAL ship of {instance}")
    return {
        "mark_lsn": format_lsn(outcome.mark.lsn), "mark_time": iso(outcome.mark.time),
        "segments": outcome.segments_shipped, "lag_seconds": outcome.lag.total_seconds(),
        "slot_retained_bytes": outcome.slot.retained_bytes if outcome.slot else None,
    }


@task(name="follow-wal", cache_policy=NONE)
def follow_wal_stream(instance: str, config_path: str | None) -> dict[str, Any]:
    """Follow mode: no retries here; the deployment's schedule restarts an ended follower."""
    from pitrflow.engines.postgres.wal.follow import follow_until_signalled

    config = config_for(config_path)
    with core_logs_to_run_log():
        done = follow_until_signalled(config.instance(instance), open_repository(config.repository))
    return {"segments": done.segments_stored, "partials": done.partials_stored,
            "marks": done.marks_written, "seconds": done.seconds}
