from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.health import verify_backups


@flow(name="verify")
def verify(instance: str, backup_id: str | None = None,
           config_path: str | None = None) -> list[dict[str, Any]]:
    """Re-read every object of INSTANCE's backups (or one) and the WAL (SQL Server: the log
    chain) they need."""
    return verify_backups(instance, backup_id, config_path)
