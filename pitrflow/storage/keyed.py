"""What code above the storage layer asks of an encrypted repository, without importing it.

`start_new_epoch` must be called at the start of every full backup (PostgreSQL's
take_backup, SQL Server's full backups): what follows is encrypted under a fresh
data key, so one leaked data key never opens more than one full chain.  Both
functions are no-ops on an unencrypted repository.
"""

from __future__ import annotations

from typing import Any, cast

from pitrflow.storage.base import Repository

CIPHER = "aes-256-gcm"


def start_new_epoch(repo: Repository) -> str | None:
    """A new data key for what follows; its id, or None when the repository is unencrypted.

    Fails (EncryptionKeyError, nothing written) when the master key does not open the
    repository's keys, so a backup with the wrong passphrase stops before it starts.
    """
    if not repo.features.encrypted:
        return None
    return cast(Any, repo).start_new_epoch()  # type: ignore[no-any-return]


def encryption_note(repo: Repository) -> dict[str, str] | None:
    """What a manifest records about how its objects were encrypted (None: not encrypted)."""
    if not repo.features.encrypted:
        return None
    return {"cipher": CIPHER, "data_key": cast(Any, repo).writing_epoch()}
