"""pitrflow.secrets: where an instance's password comes from, and the one line when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitrflow import secrets
from pitrflow.config import parse_config
from pitrflow.errors import ConfigError

CONFIG = """
[repository]
path = "/srv/repo"

[instances.main]
engine = "postgresql"
host = "db1"
user = "pitrflow"
connection_block = "db1-login"

[instances.sales]
engine = "sqlserver"
host = "sql1"
database = "Sales"
user = "backup"
connection_block = "sales-login"
backup_dir_server = 'D:\\Backups'
backup_dir_worker = "/mnt/backups"
"""


def _config():  # type: ignore[no-untyped-def]
    return parse_config(CONFIG, Path("/etc/pitrflow.toml"))


def test_without_prefect_a_connection_block_is_one_line_naming_the_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "_connection_resolver", None)
    with pytest.raises(ConfigError) as caught:
        secrets.instance_password(_config().instances["main"])
    assert caught.value.message == (
        "instance main takes its password from Prefect block "
        "pitrflow-postgresql-connection/db1-login (connection_block), which needs a Prefect "
        "server: this run has none")
    assert "password_env" in (caught.value.hint or "")


def test_the_block_type_follows_the_engine_and_the_login_must_match(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def resolver(block_type: str, name: str) -> secrets.Login:
        asked.append((block_type, name))
        return secrets.Login("backup", "pw-from-the-block")

    monkeypatch.setattr(secrets, "_connection_resolver", resolver)
    config = _config()
    assert secrets.instance_password(config.instances["sales"]) == "pw-from-the-block"
    with pytest.raises(ConfigError, match="holds the login of 'backup', but instance main "
                                          "connects as 'pitrflow'"):
        secrets.instance_password(config.instances["main"])
    assert asked == [("pitrflow-sql-server-connection", "sales-login"),
                     ("pitrflow-postgresql-connection", "db1-login")]
    assert "pw-from-the-block" not in repr(resolver("x", "y"))
