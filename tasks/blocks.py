"""Prefect blocks that hold an instance's login: one type per database engine.

An instance names its block in the config (`connection_block = "db1-pitrflow"`)
instead of an environment variable, so 200 passwords live in the Prefect server
(encrypted, editable in the UI, shown as `********`) rather than in every
worker's environment.  The block holds the secret and the login it belongs to;
where to connect (host, port, database) stays in the config beside everything
else about the instance, and pitrflow refuses a block made for another login.

The types are registered by `pitr deploy`; `tasks.runtime` imports this
module so a flow run can load them by slug.  The core resolves a block only
through `pitrflow.secrets`, never by importing this module.
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from pitrflow.secrets import CONNECTION_BLOCK_TYPES, Login


class _Connection(Block):
    """The fields every connection block shares (not a block type of its own)."""

    username: str = Field(description="The login pitrflow connects as (the instance's `user`).")
    password: SecretStr = Field(description="Its password; stored encrypted, never logged.")

    def login(self) -> Login:
        return Login(self.username, self.password.get_secret_value())


class PostgresConnection(_Connection):
    """The login pitrflow uses for one PostgreSQL instance: a role with REPLICATION
    (see infra/postgres/backup-role.sql), for pg_basebackup, pg_receivewal and the
    few SQL calls a backup and a ship make.

    Example:
        Save the login once, then name it in the instance's config:
        ```python
        from tasks.blocks import PostgresConnection

        PostgresConnection(username="pitrflow", password="...").save("db1-pitrflow")
        ```
        ```toml
        [instances.db1]
        engine = "postgresql"
        host = "db1.internal"
        user = "pitrflow"
        connection_block = "db1-pitrflow"
        ```
    """

    _block_type_name: ClassVar[str] = "pitrflow PostgreSQL connection"
    _block_type_slug: ClassVar[str] = CONNECTION_BLOCK_TYPES["postgresql"]
    _description: ClassVar[str] = (
        "The login (role and password) pitrflow backs up, ships WAL and checks a PostgreSQL "
        "instance with. Named by an instance's connection_block in the pitrflow config.")
    _documentation_url: ClassVar[str] = (
        "https://www.postgresql.org/docs/current/role-attributes.html")


class SqlServerConnection(_Connection):
    """The SQL login pitrflow uses for one SQL Server database: db_backupoperator in the
    database, read access to msdb's backup history, dbcreator for restores and drills.

    Example:
        Save the login once, then name it in the instance's config:
        ```python
        from tasks.blocks import SqlServerConnection

        SqlServerConnection(username="pitrflow", password="...").save("sales-pitrflow")
        ```
        ```toml
        [instances.sales]
        engine = "sqlserver"
        host = "sql1.internal"
        database = "Sales"
        user = "pitrflow"
        connection_block = "sales-pitrflow"
        ```
    """

    _block_type_name: ClassVar[str] = "pitrflow SQL Server connection"
    _block_type_slug: ClassVar[str] = CONNECTION_BLOCK_TYPES["sqlserver"]
    _description: ClassVar[str] = (
        "The SQL login (name and password) pitrflow backs up, restores and checks a SQL "
        "Server database with. Named by an instance's connection_block in the pitrflow "
        "config.")
    _documentation_url: ClassVar[str] = (
        "https://learn.microsoft.com/en-us/sql/relational-databases/security/"
        "authentication-access/create-a-login")


CONNECTION_BLOCKS: tuple[type[_Connection], ...] = (PostgresConnection, SqlServerConnection)
