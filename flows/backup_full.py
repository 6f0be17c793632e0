from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.backup import take_full_backup


@flow(name="backup_full", log_prints=True)
def backup_full(instance: str, config_path: str | None = None) -> dict[str, Any]:
    """Take a full base backup of INSTANCE into the repository."""
    return take_full_backup(instance, config_path)
