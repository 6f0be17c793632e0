"""What a backup records of the cluster's layout: its user tablespaces and its databases.

Both are read from the server when the backup starts (and again when it
ends, for any created in between) and stored in the manifest's `extra`, so a
restore can be planned, and refused, from the manifest alone: where each
tablespace was (`--tablespace-map` names them), and which database OIDs the
files under base/ and pg_tblspc/ belong to (`--db-include`).  A backup taken
before this was recorded has no `databases` entry: `databases_of` says None.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pitrflow.engines.postgres.catalog.manifest import BackupManifest

TABLESPACES = "tablespaces"
DATABASES = "databases"
# Always restored whole: the cluster cannot start, or be connected to, without them.
SYSTEM_DATABASES = ("template0", "template1", "postgres")
FIRST_NORMAL_OID = 16384  # PostgreSQL's FirstNormalObjectId: OIDs below are initdb's


@dataclass(frozen=True)
class Tablespace:
    oid: int
    name: str
    location: str  # where it was when the backup was taken

    @property
    def path_prefix(self) -> str:
        """Where its files sit in the file index (and in PostgreSQL's backup_manifest)."""
        return f"pg_tblspc/{self.oid}/"

    def describe(self) -> str:
        return f"{self.name} (OID {self.oid}, {self.location})"


@dataclass(frozen=True)
class Database:
    oid: int
    name: str

    @property
    def is_system(self) -> bool:
        return self.name in SYSTEM_DATABASES or self.oid < FIRST_NORMAL_OID


def merge_tablespaces(*seen: Iterable[tuple[int, str, str]]) -> tuple[Tablespace, ...]:
    """Every tablespace seen, by OID; the first reading of an OID wins (a later rename or
    move does not change what the backup's files are)."""
    found: dict[int, Tablespace] = {}
    for rows in seen:
        for oid, name, location in rows:
            found.setdefault(oid, Tablespace(oid, name, location))
    return tuple(sorted(found.values(), key=lambda t: t.oid))


def merge_databases(*seen: Iterable[tuple[int, str]]) -> tuple[Database, ...]:
    found: dict[int, Database] = {}
    for rows in seen:
        for oid, name in rows:
            found.setdefault(oid, Database(oid, name))
    return tuple(sorted(found.values(), key=lambda d: d.oid))


def layout_extra(tablespaces: Iterable[Tablespace], databases: Iterable[Database]
                 ) -> dict[str, Any]:
    return {TABLESPACES: [{"oid": t.oid, "name": t.name, "location": t.location}
                          for t in tablespaces],
            DATABASES: [{"oid": d.oid, "name": d.name} for d in databases]}


def tablespaces_of(manifest: BackupManifest) -> tuple[Tablespace, ...]:
    return tuple(Tablespace(int(t["oid"]), str(t["name"]), str(t["location"]))
                 for t in manifest.extra.get(TABLESPACES) or [])


def databases_of(manifest: BackupManifest) -> tuple[Database, ...] | None:
    """The databases the backup holds; None when the backup did not record them."""
    recorded = manifest.extra.get(DATABASES)
    if recorded is None:
        return None
    return tuple(Database(int(d["oid"]), str(d["name"])) for d in recorded)
