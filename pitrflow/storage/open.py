"""Choose the storage driver for a repository configuration.

Provider SDKs are imported only when their driver is chosen, so a
filesystem user never pays for boto3's import.
"""

from __future__ import annotations

from pitrflow.config import RepositoryConfig
from pitrflow.storage.base import Repository


def open_repository(config: RepositoryConfig) -> Repository:
    if config.url:
        from pitrflow.storage.s3 import S3Repository

        return S3Repository.from_config(config)
    from pitrflow.storage.fs import FsRepository

    assert config.path is not None
    return FsRepository(config.path)
