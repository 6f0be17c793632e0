from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.health import check_instance


@flow(name="check")
def check(instance: str, config_path: str | None = None) -> list[dict[str, Any]]:
    """Check INSTANCE's server, slot (SQL Server: database), repository, backups, WAL or
    logs, drills and retention."""
    return check_instance(instance, config_path)
