from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.retention import expire_backups


@flow(name="expire")
def expire(instance: str, dry_run: bool = False, config_path: str | None = None) -> dict[str, Any]:
    """Apply the instance's retention policy: delete what no kept backup needs."""
    return expire_backups(instance, config_path, dry_run)
