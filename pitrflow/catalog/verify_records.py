"""Verify results, stored beside the backups they judge, in the same shape for every engine.

`pitr info` and `pitr check` read them back; a backup whose last verify failed
is flagged wherever it is listed.
"""

from __future__ import annotations

from typing import Any

from pitrflow.catalog.records import dump_record, load_record
from pitrflow.errors import RepositoryError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import verify_key


def store_verify_result(repo: Repository, instance: str, backup_id: str,
                        result: dict[str, Any]) -> str:
    key = verify_key(instance, backup_id)
    repo.put_bytes(key, dump_record("verify", result))
    return key


def verify_status(repo: Repository, instance: str, backup_id: str) -> dict[str, Any] | None:
    """The last verify result of one backup, None when it was never verified."""
    key = verify_key(instance, backup_id)
    try:
        return load_record("verify", repo.get_bytes(key), key)
    except RepositoryError:
        return None
