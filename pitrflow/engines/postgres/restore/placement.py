"""Where a restore puts the user tablespaces, and which databases it restores.

Both are decided from the backup's manifest alone (catalog/cluster.py), so
a bad name is refused, in one line that lists what the backup holds, before
anything is fetched or written.

- Tablespaces go back to their recorded locations unless remapped: by name
  or OID (`--tablespace-map NAME_OR_OID=DIR`), or all of the others under
  one directory (`--tablespace-map-all DIR`: DIR/<name>).  Each directory
  must be new or empty, outside the data directory and apart from the
  others.
- `--db-include NAME` restores the named databases and the system ones;
  every other database's files come back as sparse zero-filled files of
  their recorded size, never fetched: recovery replays into them (its full
  page images rewrite every page it touches), the database cannot be
  connected to, and DROP DATABASE removes it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pitrflow.engines.postgres.bundles.index import FileIndex
from pitrflow.engines.postgres.catalog.cluster import (
    Database,
    Tablespace,
    databases_of,
    tablespaces_of,
)
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES, BackupManifest
from pitrflow.errors import RestoreRefusedError, UsageError


@dataclass(frozen=True)
class TablespacePlacement:
    tablespace: Tablespace
    target: Path

    @property
    def moved(self) -> bool:
        return self.target != Path(self.tablespace.location)

    def describe(self) -> str:
        where = (f"{self.target} (recorded at {self.tablespace.location})" if self.moved
                 else f"{self.target} (its recorded location)")
        return f"{self.tablespace.name} (OID {self.tablespace.oid}) -> {where}"


def _holds(tablespaces: Sequence[Tablespace]) -> str:
    return ", ".join(t.describe() for t in tablespaces) or "none"


def place_tablespaces(backup: BackupManifest, mapping: Sequence[tuple[str, str]],
                      map_all: str | None, pgdata: Path) -> tuple[TablespacePlacement, ...]:
    """Each user tablespace of `backup` and its directory for this restore (pure)."""
    tablespaces = tablespaces_of(backup)
    chosen: dict[int, Path] = {}
    for key, directory in mapping:
        found = next((t for t in tablespaces if t.name == key), None) or next(
            (t for t in tablespaces if key.isdigit() and t.oid == int(key)), None)
        if found is None:
            raise UsageError(f"--tablespace-map {key}={directory}: backup {backup.id} holds no "
                             f"tablespace {key!r}; it holds: {_holds(tablespaces)}",
                             "name a tablespace of the backup by its name or OID")
        if found.oid in chosen:
            raise UsageError(f"--tablespace-map names tablespace {found.name} twice",
                             "give one directory per tablespace")
        chosen[found.oid] = Path(directory)
    placements = []
    for t in tablespaces:
        target = chosen.get(t.oid) or (Path(map_all) / t.name if map_all else Path(t.location))
        placements.append(TablespacePlacement(t, Path(target).absolute()))
    _check_apart(placements, pgdata)
    return tuple(placements)


def _inside(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _check_apart(placements: list[TablespacePlacement], pgdata: Path) -> None:
    for n, p in enumerate(placements):
        if _inside(p.target, pgdata) or _inside(pgdata, p.target):
            raise UsageError(f"tablespace {p.tablespace.name} would go to {p.target}, which "
                             f"overlaps the data directory {pgdata}",
                             "put tablespaces outside the data directory (--tablespace-map)")
        for q in placements[n + 1:]:
            if _inside(p.target, q.target) or _inside(q.target, p.target):
                raise UsageError(f"tablespaces {p.tablespace.name} and {q.tablespace.name} "
                                 f"would share {p.target} and {q.target}",
                                 "give each tablespace its own directory")


def decide_placement(backup: BackupManifest, pgdata: Path, mapping: Sequence[tuple[str, str]],
                     map_all: str | None, db_include: Sequence[str], *, delta: bool,
                     standby: bool
                     ) -> tuple[tuple[TablespacePlacement, ...], tuple[Database, ...]]:
    """Where the tablespaces go and which databases are left out, or why not (reads only
    the tablespace directories, to see that they are new or empty)."""
    tablespaces = place_tablespaces(backup, mapping, map_all, pgdata)
    if tablespaces and delta:
        raise RestoreRefusedError(
            f"backup {backup.id} holds user tablespaces "
            f"({', '.join(p.tablespace.name for p in tablespaces)}): a delta restore rewrites "
            "a data directory without them",
            "restore into new or empty directories without --delta")
    if db_include and (delta or standby):
        raise RestoreRefusedError(
            "--db-include restores into a new cluster whose left-out databases are then "
            "dropped: it cannot be combined with --delta or --standby",
            "restore without --delta and --standby")
    check_tablespace_dirs(tablespaces)
    return tablespaces, excluded_databases(backup, db_include)


def check_tablespace_dirs(placements: Sequence[TablespacePlacement]) -> None:
    """Every tablespace directory is new or empty (changes nothing)."""
    for p in placements:
        target = p.target
        if not target.exists() and not target.is_symlink():
            continue
        if not target.is_dir():
            raise RestoreRefusedError(
                f"tablespace directory {target} (for {p.tablespace.name}) exists and is not a "
                "directory", "choose a new or empty one with --tablespace-map "
                f"{p.tablespace.name}=DIR or --tablespace-map-all DIR")
        if any(target.iterdir()):
            hint = ("it is the tablespace's recorded location: restore elsewhere with "
                    "--tablespace-map or --tablespace-map-all" if not p.moved
                    else "restores never write into a non-empty directory: choose a new or "
                         "empty one")
            raise RestoreRefusedError(
                f"tablespace directory {target} (for {p.tablespace.name}) is not empty", hint)


def excluded_databases(backup: BackupManifest, include: Sequence[str]
                       ) -> tuple[Database, ...]:
    """The databases a `--db-include` restore leaves out: all but the named and the system
    ones (pure)."""
    if not include:
        return ()
    if backup.layout != LAYOUT_BUNDLES:
        raise RestoreRefusedError(
            f"backup {backup.id} is a single-stream (v1) backup: --db-include needs the file "
            "index of a v2 backup", "restore the whole cluster, without --db-include")
    held = databases_of(backup)
    if held is None:
        raise RestoreRefusedError(
            f"backup {backup.id} records no list of databases (taken by an older pitrflow)",
            "restore the whole cluster, or take a new full backup to restore one database")
    names = ", ".join(d.name for d in sorted(held, key=lambda d: d.name))
    wanted: set[int] = set()
    for name in include:
        found = next((d for d in held if d.name == name), None)
        if found is None:
            raise UsageError(f"--db-include {name}: backup {backup.id} holds no database "
                             f"{name!r}; it holds: {names}", "name a database of the backup")
        wanted.add(found.oid)
    return tuple(d for d in held if d.oid not in wanted and not d.is_system)


def zeroed_paths(index: FileIndex, excluded: Sequence[Database]) -> frozenset[str]:
    """Files of the excluded databases: base/<oid>/... and pg_tblspc/<ts>/<version>/<oid>/..."""
    if not excluded:
        return frozenset()
    oids = {str(d.oid) for d in excluded}
    found = set()
    for entry in index.entries:
        if entry.type != "file":
            continue
        parts = entry.path.split("/")
        if (len(parts) == 3 and parts[0] == "base" and parts[1] in oids) or (
                len(parts) == 5 and parts[0] == "pg_tblspc" and parts[3] in oids):
            found.add(entry.path)
    return frozenset(found)


TABLESPACE_MAP = "tablespace_map"


def new_targets(placements: Sequence[TablespacePlacement]) -> list[Path]:
    """The tablespace directories this restore will create (so a failure removes them)."""
    return [p.target for p in placements if not p.target.exists()]


def make_tablespace_dirs(placements: Sequence[TablespacePlacement], user: str | None) -> None:
    """Each tablespace directory, made if missing, mode 0700, owned by the server's user."""
    for p in placements:
        p.target.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(p.target, 0o700)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(p.target, entry.pw_uid, entry.pw_gid)


def wipe_tablespaces(placements: Sequence[TablespacePlacement], created: Sequence[Path]) -> None:
    """After a failed restore: remove the directories it created, empty the others."""
    for p in placements:
        if p.target in created:
            shutil.rmtree(p.target, ignore_errors=True)
        elif p.target.is_dir():
            for child in p.target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        child.unlink()


def drop_tablespace_map(pgdata: Path) -> None:
    """Remove the backup's tablespace_map before the server starts.

    It names the locations the tablespaces were backed up from, and a server
    starting from a backup re-points pg_tblspc/<oid> at what it names: left
    in place it would send a remapped restore's writes to the source's
    directories.  Without it the server keeps the symlinks the restore made.
    """
    with contextlib.suppress(FileNotFoundError):
        (pgdata / TABLESPACE_MAP).unlink()


def zero_excluded(pgdata: Path, excluded: Sequence[Database]) -> None:
    """Zero-fill, in place and sparse, the files of the excluded databases (a rebuilt chain:
    pg_combinebackup needed them whole, the restore must not keep them)."""
    oids = {str(d.oid) for d in excluded}
    if not oids:
        return
    dirs = [pgdata / "base" / oid for oid in oids]
    for space in (pgdata / "pg_tblspc").glob("*/*"):
        dirs += [space / oid for oid in oids]
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                os.truncate(path, 0)
                os.truncate(path, size)
