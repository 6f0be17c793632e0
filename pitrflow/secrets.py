"""Where secrets come from: an environment variable or a registered resolver.

The core never imports Prefect; the tasks layer registers resolvers for
Prefect Secret blocks and for pitrflow's connection blocks at import time.
Without them (a CLI run without the orchestrator) a block cannot be read, and
the run says so in one line.  A password is only ever handed to libpq or the
ODBC driver through the environment of a connection or child process, and
every child's output is redacted with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from pitrflow.config import InstanceConfig
from pitrflow.errors import ConfigError

# The block type of each engine's connection block (tasks/blocks.py defines them).
CONNECTION_BLOCK_TYPES = {
    "postgresql": "pitrflow-postgresql-connection",
    "sqlserver": "pitrflow-sql-server-connection",
}


@dataclass(frozen=True)
class Login:
    """What a connection block holds: the login it is for, and its password."""

    user: str
    password: str

    def __repr__(self) -> str:  # never the password, whoever prints this
        return f"Login(user={self.user!r}, password='********')"


_block_resolver: Callable[[str], str] | None = None
_connection_resolver: Callable[[str, str], Login] | None = None


def register_block_resolver(resolver: Callable[[str], str]) -> None:
    global _block_resolver
    _block_resolver = resolver


def register_connection_resolver(resolver: Callable[[str, str], Login]) -> None:
    """RESOLVER(block_type_slug, block_name) loads a connection block's login."""
    global _connection_resolver
    _connection_resolver = resolver


def connection_block_slug(instance: InstanceConfig) -> str:
    """`<block type>/<name>` of the instance's connection block, as Prefect names it."""
    return f"{CONNECTION_BLOCK_TYPES[instance.engine]}/{instance.connection_block}"


def _from_connection_block(instance: InstanceConfig) -> str:
    slug = connection_block_slug(instance)
    if _connection_resolver is None:
        raise ConfigError(
            f"instance {instance.name} takes its password from Prefect block {slug} "
            "(connection_block), which needs a Prefect server: this run has none",
            "set PREFECT_API_URL to the server that holds the block, or give the instance "
            "password_env for runs without the orchestrator",
        )
    login = _connection_resolver(CONNECTION_BLOCK_TYPES[instance.engine],
                                 str(instance.connection_block))
    if login.user != instance.user:
        raise ConfigError(
            f"Prefect block {slug} holds the login of {login.user!r}, but instance "
            f"{instance.name} connects as {instance.user!r} (instances.{instance.name}.user)",
            "point connection_block at the block of that user, or set user to the "
            "block's username",
        )
    return login.password
def block_secret(block: str, what: str) -> str:
    """The value of a Prefect Secret block named by config key `what` (dotted)."""
    if _block_resolver is None:
        raise ConfigError(
            f"{what} names Prefect Secret block {block!r}, but Prefect is not loaded here",
            "run through the pitr commands or the flows, or use the *_env form of the key")
    return _block_resolver(block)


def instance_password(instance: InstanceConfig) -> str | None:
    if instance.password_env:
        value = os.environ.get(instance.password_env)
        if value is None:
            raise ConfigError(
                f"environment variable {instance.password_env} (password_env of instance "
                f"{instance.name}) is not set",
                f"export {instance.password_env}=... in the worker's environment",
            )
        return value
    if instance.password_block:
        if _block_resolver is None:
            raise ConfigError(
                f"instance {instance.name} names Prefect Secret block "
                f"{instance.password_block!r}, but Prefect is not loaded here",
                "run through the pitr backup/ship/restore commands or use password_env",
            )
        return _block_resolver(instance.password_block)
    if instance.connection_block:
        return _from_connection_block(instance)
    return None
