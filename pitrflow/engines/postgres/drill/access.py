"""Reaching a scratch instance as its superuser, and only from this host.

A restore made for a drill trusts connections on its private socket
directory (mode 0700, owned by the server's user) and asks a password on
localhost TCP.  The drill sets a random one-off password for the bootstrap
superuser, so Great Expectations (which needs TCP) can connect while no
other local user can.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg

DRILL_HBA = """# pitrflow drill scratch instance: private socket trusted, localhost TCP by password
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


@dataclass(frozen=True)
class ScratchAccess:
    socket_dir: Path
    port: int
    superuser: str
    password: str

    def conninfo(self, dbname: str = "postgres") -> dict[str, object]:
        return {"host": str(self.socket_dir), "port": self.port, "user": self.superuser,
                "dbname": dbname}

    def sqlalchemy_url(self, dbname: str = "postgres") -> str:
        from urllib.parse import quote

        return (f"postgresql+psycopg://{quote(self.superuser, safe='')}:"
                f"{quote(self.password, safe='')}@127.0.0.1:{self.port}/{quote(dbname)}")


def open_access(socket_dir: Path, port: int, any_role: str) -> ScratchAccess:
    """Find the bootstrap superuser through the trusted socket and give it a one-off password."""
    with psycopg.connect(host=str(socket_dir), port=port, user=any_role, dbname="postgres",
                         autocommit=True) as conn:
        row = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
        assert row is not None
        superuser = str(row[0])
    password = secrets.token_urlsafe(24)
    with psycopg.connect(host=str(socket_dir), port=port, user=superuser, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            psycopg.sql.Identifier(superuser), psycopg.sql.Literal(password)))
    return ScratchAccess(socket_dir, port, superuser, password)


def databases(access: ScratchAccess) -> list[str]:
    with psycopg.connect(**access.conninfo(), autocommit=True) as conn:  # type: ignore[arg-type]
        return [str(r[0]) for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")]
