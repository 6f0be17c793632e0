"""Choose the storage driver for a repository configuration.

Provider SDKs are imported only when their driver is chosen, so a
filesystem user never pays for boto3's import.  With [repository.encryption]
the driver is wrapped by the encrypting repository (storage.encrypted), so
everything above the storage layer works unchanged on an encrypted repository.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitrflow.storage.base import Repository

if TYPE_CHECKING:  # config imports storage.base for TransferSettings
    from pitrflow.config import RepositoryConfig


def open_driver(config: RepositoryConfig) -> Repository:
    """The plain driver (fs or s3), never wrapped."""
    if config.url:
        from pitrflow.storage.s3 import S3Repository

        return S3Repository.from_config(config)
    from pitrflow.storage.fs import FsRepository

    assert config.path is not None
    return FsRepository(config.path, config.transfer)


def open_repository(config: RepositoryConfig) -> Repository:
    inner = open_driver(config)
    if config.encryption is None:
        return inner
    from pitrflow.storage.encrypted import EncryptedRepository
    from pitrflow.storage.masters import source_from_config

    return EncryptedRepository(inner, source_from_config(config.encryption,
                                                         config.credentials_block))
