"""Configuration of `engine = "sqlserver"` instances: defaults, required keys, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitrflow.config import parse_config
from pitrflow.errors import ConfigError

SOURCE = Path("/etc/pitrflow/pitr.toml")

SQLSERVER = """
[repository]
path = "/srv/repo"

[instances.sales]
engine = "sqlserver"
host = "sql1.internal"
database = "Sales"
user = "pitrflow"
password_env = "PITR_SALES_PASSWORD"
backup_dir_server = 'D:\\Backups\\pitrflow'
backup_dir_worker = "/mnt/sqlbackup/pitrflow"
"""


def config_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, SOURCE)
    assert caught.value.hint
    return caught.value


def test_sqlserver_instance_gets_its_own_defaults() -> None:
    sales = parse_config(SQLSERVER, SOURCE).instance("sales")

    assert sales.engine == "sqlserver"
    assert sales.port == 1433
    assert sales.odbc_driver == "FreeTDS"
    assert sales.encrypt is True
    assert sales.trust_server_certificate is False
    assert sales.compression is True
    assert sales.backup_dir_server == "D:\\Backups\\pitrflow"
    assert sales.backup_dir_worker == Path("/mnt/sqlbackup/pitrflow")
    assert sales.data_dir_server == ""


def test_every_sqlserver_key_can_be_set() -> None:
    text = SQLSERVER + """port = 14330
odbc_driver = "ODBC Driver 18 for SQL Server"
encrypt = false
trust_server_certificate = true
compression = false
data_dir_server = "/var/opt/mssql/data/restored"
"""
    sales = parse_config(text, SOURCE).instance("sales")
    assert (sales.port, sales.odbc_driver, sales.encrypt, sales.trust_server_certificate,
            sales.compression, sales.data_dir_server) == (
        14330, "ODBC Driver 18 for SQL Server", False, True, False,
        "/var/opt/mssql/data/restored")


def test_relative_worker_directory_is_relative_to_the_config_file() -> None:
    text = SQLSERVER.replace('"/mnt/sqlbackup/pitrflow"', '"share/sales"')
    sales = parse_config(text, SOURCE).instance("sales")
    assert sales.backup_dir_worker == Path("/etc/pitrflow/share/sales")


@pytest.mark.parametrize("key", ["database", "user", "backup_dir_server", "backup_dir_worker"])
def test_missing_required_key_is_named(key: str) -> None:
    lines = [line for line in SQLSERVER.splitlines() if not line.startswith(f"{key} =")]
    error = config_error("\n".join(lines))
    assert error.message == f"missing key instances.sales.{key} in {SOURCE} (engine sqlserver)"
    assert error.hint.startswith(f"add {key} = ")


def test_backup_to_url_outside_the_repository_is_refused_with_a_hint() -> None:
    text = SQLSERVER.replace("'D:\\Backups\\pitrflow'", '"s3://minio:9000/bucket/sql"')
    error = config_error(text)
    assert "writes to bucket 'bucket' prefix 'sql', but the repository is" in error.message
    assert error.hint.startswith('BACKUP TO URL needs repository.url = "s3://bucket/sql"')


def test_wrong_type_is_named() -> None:
    error = config_error(SQLSERVER + 'encrypt = "yes"\n')
    assert error.message == (
        f"instances.sales.encrypt in {SOURCE} must be bool, got 'yes'")


def test_postgresql_instances_keep_their_defaults() -> None:
    text = SQLSERVER + """
[instances.main]
engine = "postgresql"
host = "db1"
"""
    main = parse_config(text, SOURCE).instance("main")
    assert (main.port, main.user, main.database) == (5432, "postgres", "postgres")
    assert main.backup_dir_worker is None
