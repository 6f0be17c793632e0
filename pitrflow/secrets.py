"""Where secrets come from: an environment variable or a registered resolver.

The core never imports Prefect; the tasks layer registers a resolver for
Prefect Secret blocks at import time.  A password is only ever handed to
libpq through the environment of a connection or child process, and every
child's output is redacted with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pitrflow.config import InstanceConfig
from pitrflow.errors import ConfigError

_block_resolver: Callable[[str], str] | None = None


def register_block_resolver(resolver: Callable[[str], str]) -> None:
    global _block_resolver
    _block_resolver = resolver


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
    return None
