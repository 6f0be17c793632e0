"""BACKUP TO URL (SQL Server 2022+): configuration and T-SQL, no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitrflow.config import parse_config
from pitrflow.engines.sqlserver.backup import url_stripe_names
from pitrflow.engines.sqlserver.paths import is_url, server_join
from pitrflow.engines.sqlserver.tsql import (
    backup_database_sql,
    backup_log_sql,
    restore_filelistonly_sql,
)
from pitrflow.errors import ConfigError

_URL = "s3://minio.internal:9000/pitr-bucket/prod"


def _config(tmp_path: Path, repository: str, server: str = _URL, extra: str = "") -> str:
    return f"""
[repository]
{repository}

[instances.sales]
engine = "sqlserver"
host = "sql1.internal"
database = "Sales"
user = "pitrflow"
password_env = "PITR_SALES_PASSWORD"
backup_dir_server = "{server}"
{extra}
"""


def test_url_instance_needs_no_worker_directory(tmp_path: Path) -> None:
    text = _config(tmp_path, 'url = "s3://pitr-bucket/prod"', extra="url_stripes = 4")
    instance = parse_config(text, tmp_path / "pitr.toml").instance("sales")
    assert instance.backup_to_url and instance.url_stripes == 4
    assert instance.backup_dir_worker is None


@pytest.mark.parametrize(("repository", "server", "wanted"), [
    ('url = "s3://pitr-bucket/other"', _URL, "but the repository is s3://pitr-bucket/other"),
    ('url = "s3://other-bucket/prod"', _URL, "writes to bucket 'pitr-bucket' prefix 'prod'"),
    ('path = "/var/lib/pitrflow/repo"', _URL, "but the repository is /var/lib/pitrflow/repo"),
    ('url = "s3://pitr-bucket/prod"', "s3://minio.internal:9000", "must be s3://HOST"),
    ('url = "s3://pitr-bucket/prod"', "https://acct.blob.core.windows.net/c", "must be s3://"),
])
def test_url_that_is_not_the_repository_is_refused(tmp_path: Path, repository: str,
                                                   server: str, wanted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(tmp_path, repository, server), tmp_path / "pitr.toml")
    assert wanted in caught.value.message
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("stripes", [0, 65])
def test_stripes_out_of_range_are_refused(tmp_path: Path, stripes: int) -> None:
    text = _config(tmp_path, 'url = "s3://pitr-bucket/prod"', extra=f"url_stripes = {stripes}")
    with pytest.raises(ConfigError, match="url_stripes .* must be from 1 to 64"):
        parse_config(text, tmp_path / "pitr.toml")


def test_directory_instances_still_need_the_worker_directory(tmp_path: Path) -> None:
    text = _config(tmp_path, 'url = "s3://pitr-bucket/prod"', server="D:\\\\Backups")
    with pytest.raises(ConfigError, match="missing key instances.sales.backup_dir_worker"):
        parse_config(text, tmp_path / "pitr.toml")


def test_urls_join_with_slashes_and_windows_paths_do_not_count_as_urls() -> None:
    assert server_join(_URL + "/", "sales/backups/X-F", "a.bak") == (
        _URL + "/sales/backups/X-F/a.bak")
    assert not is_url("C://share") and not is_url("D:\\Backups") and is_url(_URL)


def test_backup_and_restore_statements_to_url_golden() -> None:
    urls = [f"{_URL}/sales/backups/X-F/sales_X-F_{n}of2.bak" for n in (1, 2)]
    assert backup_database_sql("Sa]es 'Q'", urls, differential=True) == (
        "BACKUP DATABASE [Sa]]es 'Q'] TO "
        f"URL = N'{urls[0]}', URL = N'{urls[1]}' "
        "WITH DIFFERENTIAL, COMPRESSION, MAXTRANSFERSIZE = 20971520, CHECKSUM, STATS = 10")
    assert backup_log_sql("Sales", f"{_URL}/it's.trn", compression=False) == (
        f"BACKUP LOG [Sales] TO URL = N'{_URL}/it''s.trn' "
        "WITH NO_COMPRESSION, MAXTRANSFERSIZE = 20971520, CHECKSUM, STATS = 10")
    assert restore_filelistonly_sql(urls, 1) == (
        f"RESTORE FILELISTONLY FROM URL = N'{urls[0]}', URL = N'{urls[1]}' WITH FILE = 1")
    with pytest.raises(ValueError, match="either all files or all URLs"):
        backup_database_sql("Sales", [urls[0], "D:\\Backups\\b.bak"])


def test_stripe_names(tmp_path: Path) -> None:
    text = _config(tmp_path, 'url = "s3://pitr-bucket/prod"', extra="url_stripes = 3")
    instance = parse_config(text, tmp_path / "pitr.toml").instance("sales")
    assert url_stripe_names(instance, "full", "X-F") == [
        "sales_X-F_1of3.bak", "sales_X-F_2of3.bak", "sales_X-F_3of3.bak"]
    assert url_stripe_names(instance, "log", "X-L") == ["sales_X-L.trn"]
