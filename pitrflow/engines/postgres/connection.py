"""Connections to a PostgreSQL server, regular and replication.

libpq reads the password from PGPASSWORD in the child's environment, so no
password ever appears in an argv list or a conninfo string that is logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from pitrflow.config import InstanceConfig
from pitrflow.errors import ServerError
from pitrflow.secrets import instance_password


@contextmanager
def connect(instance: InstanceConfig, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    password = instance_password(instance)
    try:
        conn = psycopg.connect(
            host=instance.host, port=instance.port, user=instance.user,
            dbname=instance.database, password=password, autocommit=autocommit,
            application_name="pitrflow", connect_timeout=15,
        )
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        if password:
            first = first.replace(password, "********")
        raise ServerError(
            f"cannot connect to instance {instance.name} at {instance.host}:{instance.port}: "
            f"{first}",
            "check that the server is running, and host, port, user and password_env",
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def libpq_env(instance: InstanceConfig) -> tuple[dict[str, str], list[str]]:
    """Environment for pg_basebackup/pg_receivewal, and the secrets to redact."""
    env = {"PGAPPNAME": "pitrflow", "PGCONNECT_TIMEOUT": "15"}
    password = instance_password(instance)
    if password:
        env["PGPASSWORD"] = password
        return env, [password]
    return env, []


def libpq_args(instance: InstanceConfig) -> list[str]:
    return ["-h", instance.host, "-p", str(instance.port), "-U", instance.user, "-w"]
