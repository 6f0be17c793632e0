from __future__ import annotations

from typing import Any

from prefect import flow

from flows._limits import instance_slot
from tasks.backup import take_incremental_backup
from tasks.retention import clean_repository, expire_backups


@flow(name="backup_incremental")
def backup_incremental(instance: str, allow_full_fallback: bool | None = None,
                       config_path: str | None = None) -> dict[str, Any]:
    """Take a block-level incremental backup of INSTANCE (PostgreSQL 17+).

    When one cannot be taken, a full is taken instead if allow_full_fallback
    (default: the instance's incremental_fallback setting, on unless set off).
    """
    with instance_slot("backup", instance):
        backup = take_incremental_backup(instance, config_path, allow_full_fallback)
        expire_backups(instance, config_path)
        clean_repository(instance, config_path)
        return backup
