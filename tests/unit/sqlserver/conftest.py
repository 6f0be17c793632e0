"""Shared pieces for the SQL Server unit tests: a filesystem repository and instances."""

from __future__ import annotations

import socket
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


WEEKLY = FIXTURES / "weekly_retention.json"
"""Three weekly fulls of Shop, differentials, a copy-only full, logs twice a day."""


def closed_port() -> int:
    """A local port nothing listens on: the OS just handed it out and it was released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, *, name: str = "shop", database: str = "Shop",
                 host: str = "127.0.0.1", port: int = 1433, extra: str = "") -> Path:
    """A pitr.toml with one SQL Server instance; ``extra`` adds its sub-tables."""
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    path = tmp_path / "pitr.toml"
    path.write_text(f"""
[repository]
path = "{tmp_path / 'repo'}"

[instances.{name}]
engine = "sqlserver"
host = "{host}"
port = {port}
database = "{database}"
user = "pitrflow"
password_env = "PITR_TEST_MSSQL_PASSWORD"
backup_dir_server = 'D:\\Backups\\pitrflow'
backup_dir_worker = "{share}"
{extra}
""")
    return path
