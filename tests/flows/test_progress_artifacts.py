"""Backups and restores run as flows show their progress as one Prefect artifact each,
updated in place, that ends at 100%."""

from __future__ import annotations

import asyncio

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.backup_full import backup_full
from flows.restore_to_point import restore_to_point
from pitrflow.engines.postgres.wal.walship import ship_wal
from tests.conftest import Env, free_port, restored_ids


async def _progress(key: str) -> list[float]:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC)
    return [float(a.data) for a in found if a.type == "progress"]


def test_backup_and_restore_progress_artifacts_end_at_100(env18: Env) -> None:
    env = env18
    ids = [env.commit_row()[0] for _ in range(3)]
    backup_full(instance="main", config_path=str(env.config_path))
    ship_wal(env.instance, env.repo)
    port = free_port()
    restore_to_point(instance="main", pgdata=str(env.root / "restored"), port=port,
                     config_path=str(env.config_path))
    assert restored_ids(port) == ids
    # One artifact per run, updated in place: the newest holds the run's final value.
    assert asyncio.run(_progress("backup-progress-main"))[:1] == [100.0]
    assert asyncio.run(_progress("restore-progress-main"))[:1] == [100.0]
