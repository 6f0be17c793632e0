"""The flows run as real Prefect flow runs, publish artifacts, and fail loudly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.backup_full import backup_full
from flows.restore_to_point import restore_to_point
from flows.ship_logs import ship_logs
from pitrflow.errors import RestoreRefusedError, UsageError
from tests.conftest import Env, free_port, restored_ids


async def _artifact(key: str) -> str:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    assert found, f"no artifact {key}"
    return str(found[0].data)


def test_backup_ship_restore_flows(env18: Env, pitrflow_events: Callable[[], list[Any]]
                                   ) -> None:
    import asyncio

    env = env18
    config = str(env.config_path)
    backup = backup_full(instance="main", config_path=config)
    assert backup["type"] == "full"
    last_id, after = env.commit_row()
    env.commit_row()
    shipped = ship_logs(instance="main", config_path=config)
    assert shipped["segments"]

    markdown = asyncio.run(_artifact("backup-main"))
    assert backup["id"] in markdown and "throughput" in markdown
    assert "slot" in asyncio.run(_artifact("ship-main"))

    dry = restore_to_point(instance="main", pgdata=str(env.root / "dry"), target_time=after,
                           dry_run=True, config_path=config)
    assert dry["dry_run"] is True
    assert not (env.root / "dry").exists()
    assert backup["id"] in asyncio.run(_artifact("restore-plan-main"))

    port = free_port()
    result = restore_to_point(instance="main", pgdata=str(env.root / "pitr"), target_time=after,
                              port=port, config_path=config)
    assert result["port"] == port
    assert restored_ids(port) == list(range(1, last_id + 1))
    assert "last replayed transaction" in asyncio.run(_artifact("restore-main"))

    # One event per success, about the instance, with the sizes and the lag.
    backed_up, shipped_event = pitrflow_events()
    assert backed_up.event == "pitrflow.backup.completed"
    assert shipped_event.event == "pitrflow.wal.shipped"
    for event in (backed_up, shipped_event):
        assert event.resource.id == "pitrflow.instance.main"
        assert event.resource.get("pitrflow.engine") == "postgresql"
        assert "flow-run" in {r.role for r in event.related}
    assert backed_up.payload["backup_id"] == backup["id"]
    assert backed_up.payload["size_bytes"] == backup["size_bytes"] > 0
    assert shipped_event.payload["stored"] == len(shipped["segments"])
    assert shipped_event.payload["size_bytes"] > 0
    assert shipped_event.payload["lag_seconds"] == shipped["lag_seconds"]
    assert shipped_event.payload["recoverable_to"] == shipped["mark_time"]


def test_restore_flow_refuses_naive_time_and_bad_target(env18: Env) -> None:
    with pytest.raises(UsageError, match="no timezone"):
        restore_to_point(instance="main", pgdata=str(env18.root / "x"),
                         target_time=datetime(2026, 1, 1, 12, 0), config_path=str(
                             env18.config_path))
    with pytest.raises(RestoreRefusedError, match="no complete backup"):
        restore_to_point(instance="main", pgdata=str(env18.root / "x"),
                         config_path=str(env18.config_path))
    assert not (env18.root / "x").exists()


def test_incremental_flow_records_parent_and_saving(env18: Env) -> None:
    import asyncio

    from flows.backup_incremental import backup_incremental

    config = str(env18.config_path)
    first = backup_incremental(instance="main", config_path=config)
    assert first["type"] == "full" and "no backup of the instance yet" in first["notes"][0]
    assert "full backup was taken instead" in asyncio.run(_artifact("backup-main"))
    env18.commit_row()
    second = backup_incremental(instance="main", config_path=config)
    assert second["type"] == "incremental" and second["parent"] == first["id"]
    markdown = asyncio.run(_artifact("backup-main"))
    assert first["id"] in markdown and "saved vs the last full" in markdown
    with pytest.raises(Exception, match="no backup|summarize_wal|cannot take"):
        from pitrflow.errors import BackupRefusedError

        env18.sql("ALTER SYSTEM SET summarize_wal = off")
        env18.sql("SELECT pg_reload_conf()")
        try:
            backup_incremental(instance="main", allow_full_fallback=False, config_path=config)
        except BackupRefusedError:
            raise
        finally:
            env18.sql("ALTER SYSTEM SET summarize_wal = on")
            env18.sql("SELECT pg_reload_conf()")
