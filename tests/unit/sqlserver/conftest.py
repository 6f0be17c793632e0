"""Shared pieces for the SQL Server unit tests: a filesystem repository and instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitrflow.config import InstanceConfig
from pitrflow.storage.fs import FsRepository

FIXTURES = Path(__file__).parent / "fixtures"


def sqlserver_instance(database: str, worker_dir: Path, name: str = "sales",
                       server_dir: str = "D:\\Backups\\pitrflow",
                       data_dir: str = "") -> InstanceConfig:
    return InstanceConfig(
        name=name, engine="sqlserver", host="sql1.internal", port=1433, user="pitrflow",
        database=database, password_env="PITR_TEST_MSSQL_PASSWORD",
        backup_dir_server=server_dir, backup_dir_worker=worker_dir, data_dir_server=data_dir,
    )


@pytest.fixture
def repo(tmp_path: Path) -> FsRepository:
    return FsRepository(tmp_path / "repo")


@pytest.fixture
def worker_dir(tmp_path: Path) -> Path:
    path = tmp_path / "share"
    path.mkdir()
    return path
