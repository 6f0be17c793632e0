"""Choose the storage driver for a repository configuration.

Provider SDKs are imported only when their driver is chosen, so a
filesystem user never pays for boto3's import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitrflow.storage.base import Repository

if TYPE_CHECKING:  # config imports storage.base for TransferSettings
    from pitrflow.config import RepositoryConfig


def open_repository(config: RepositoryConfig) -> Repository:
    if config.url:
        from pitrflow.storage.s3 import S3Repository

        return S3Repository.from_config(config)
    from pitrflow.storage.fs import FsRepository

    assert config.path is not None
    return FsRepository(config.path, config.transfer)
