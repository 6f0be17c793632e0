"""The repository's protection settings: client-side encryption and S3 Object Lock.

    [repository.encryption]
    passphrase_env = "PITR_REPO_PASSPHRASE"   # or passphrase_block = "NAME", or kms_key_id = ".."

    [repository]
    object_lock = { mode = "COMPLIANCE", days = 35 }

Only names live here (an environment variable, a Prefect Secret block, a KMS key
id), never a passphrase or a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitrflow.config_schema import REQUIRED, check_table
from pitrflow.errors import ConfigError


@dataclass(frozen=True)
class EncryptionConfig:
    """[repository.encryption]: where the master key comes from (never the key itself)."""

    passphrase_env: str | None = None
    passphrase_block: str | None = None
    kms_key_id: str | None = None
    kms_region: str | None = None
    kms_endpoint_url: str | None = None


@dataclass(frozen=True)
class ObjectLockConfig:
    """object_lock = { mode, days }: every new S3 object is locked for `days` days."""

    mode: str
    days: int


_ENCRYPTION_SCHEMA: dict[str, tuple[type, Any]] = {
    "passphrase_env": (str, None),
    "passphrase_block": (str, None),
    "kms_key_id": (str, None),
    "kms_region": (str, None),
    "kms_endpoint_url": (str, None),
}
_MASTER_KEYS = ("passphrase_env", "passphrase_block", "kms_key_id")
_LOCK_SCHEMA: dict[str, tuple[type, Any]] = {"mode": (str, REQUIRED), "days": (int, REQUIRED)}
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


def parse_encryption(raw: Any, source: Path) -> EncryptionConfig:
    values = check_table(raw, _ENCRYPTION_SCHEMA, "repository.encryption", source)
    named = [k for k in _MASTER_KEYS if values[k]]
    if len(named) != 1:
        raise ConfigError(
            f"repository.encryption in {source} needs exactly one of "
            f"{', '.join(_MASTER_KEYS)}" + (f", not {' and '.join(named)}" if named else ""),
            'e.g. passphrase_env = "PITR_REPO_PASSPHRASE" (the variable holding the passphrase)')
    for key in ("kms_region", "kms_endpoint_url"):
        if values[key] and not values["kms_key_id"]:
            raise ConfigError(f"repository.encryption.{key} in {source} is set without "
                              "kms_key_id", f"remove {key} or set kms_key_id")
    return EncryptionConfig(**values)


def parse_object_lock(raw: Any, s3: bool, source: Path) -> ObjectLockConfig:
    values = check_table(raw, _LOCK_SCHEMA, "repository.object_lock", source)
    if not s3:
        raise ConfigError(f"repository.object_lock in {source} needs an S3 repository",
                          "Object Lock is an S3 feature: use repository.url, or remove it")
    if values["mode"] not in LOCK_MODES:
        raise ConfigError(f"repository.object_lock.mode in {source} is {values['mode']!r}",
                          f"use one of: {', '.join(LOCK_MODES)}")
    if not 1 <= values["days"] <= 36500:
        raise ConfigError(f"repository.object_lock.days in {source} must be from 1 to 36500",
                          "cover the retention window plus the interval between full backups")
    return ObjectLockConfig(**values)
