from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.wal import follow_wal_stream


@flow(name="follow_wal")
def follow_wal(instance: str, config_path: str | None = None) -> dict[str, Any]:
    """Stream INSTANCE's WAL into the repository until the run is cancelled (follow mode)."""
    return follow_wal_stream(instance, config_path)
