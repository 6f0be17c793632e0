from __future__ import annotations

from typing import Any

from prefect import flow

from flows._limits import instance_slot
from tasks.backup import take_full_backup
from tasks.retention import clean_repository, expire_backups


@flow(name="backup_full", log_prints=True)
def backup_full(instance: str, config_path: str | None = None) -> dict[str, Any]:
    """Take a full base backup of INSTANCE, then apply retention and clean up leftovers."""
    with instance_slot("backup", instance):
        backup = take_full_backup(instance, config_path)
        expire_backups(instance, config_path)
        clean_repository(instance, config_path)
        return backup
