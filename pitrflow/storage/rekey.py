"""`pitr repo rekey`: wrap the repository's data keys under a new master key.

No data object is rewritten: only the small files under _keys/ change (storage.keys).
Restartable: every step is idempotent, so an interrupted rekey is finished by running
the same command again, with the configuration naming either the old or the new key.
Once it reports done, point [repository.encryption] at the new key: the old
passphrase or KMS key then opens nothing.
"""

from __future__ import annotations

from pitrflow.config import EncryptionConfig, RepositoryConfig
from pitrflow.errors import UsageError
from pitrflow.storage.keys import RekeyResult
from pitrflow.storage.masters import source_from_config
from pitrflow.storage.open import open_repository


def rekey_repository(config: RepositoryConfig, *, passphrase_env: str | None = None,
                     passphrase_block: str | None = None, kms_key_id: str | None = None,
                     ) -> RekeyResult:
    """Re-wrap every data key of the repository under the new master key named here."""
    if config.encryption is None:
        raise UsageError(f"repository {config.location} is not configured as encrypted",
                         "add [repository.encryption] naming its current key first")
    named = [v for v in (passphrase_env, passphrase_block, kms_key_id) if v]
    if len(named) != 1:
        raise UsageError("pitr repo rekey needs exactly one new master key",
                         "pass --new-passphrase-env VAR, --new-passphrase-block NAME or "
                         "--new-kms-key-id ID")
    current = config.encryption
    new = EncryptionConfig(
        passphrase_env=passphrase_env, passphrase_block=passphrase_block, kms_key_id=kms_key_id,
        kms_region=(current.kms_region or config.region) if kms_key_id else None,
        kms_endpoint_url=current.kms_endpoint_url if kms_key_id else None)
    repo = open_repository(config)
    return repo.rekey(source_from_config(new, config.credentials_block))  # type: ignore[attr-defined, no-any-return]


def rekey_lines(result: RekeyResult, new_key: str) -> list[str]:
    lines = [f"rekeyed: {len(set(result.rewrapped))} data keys wrapped under master key "
             f"{result.master} ({new_key}); no data was rewritten"]
    if result.removed:
        lines.append(f"removed {len(result.removed)} old key files")
    for key, until in result.locked:
        lines.append(f"kept {key}: Object Lock until {until.isoformat() if until else '?'}; "
                     "the old master key opens it until then; run pitr repo rekey again "
                     "after that to remove it")
    lines.append(f"now set [repository.encryption] to {new_key}")
    return lines
