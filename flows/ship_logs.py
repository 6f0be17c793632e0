from __future__ import annotations

from typing import Any

from prefect import flow

from flows._limits import instance_slot
from tasks.wal import ship_wal_segments


@flow(name="ship_logs")
def ship_logs(instance: str, config_path: str | None = None) -> dict[str, Any]:
    """Ship INSTANCE's WAL up to now into the repository and record a mark."""
    with instance_slot("ship", instance):
        return ship_wal_segments(instance, config_path)
