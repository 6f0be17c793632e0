"""Delta restore into an existing data directory: refuse what is unsafe, survive interruption.

Refused in one line, before anything is touched: a v1 backup (no file
index), an incremental chain, a directory that is not a data directory, a
directory a server is running on, and another cluster's directory (its
system identifier, the first 8 bytes of global/pg_control, differs).

Once accepted, a marker naming the cluster and the backup is written and
global/pg_control removed before any file changes, so a half-done directory
can never be started; a rerun accepts the marker in place of the control
file and carries on.  The control file is written again last, then the
marker goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pitrflow.engines.postgres.bundles.delta import (
    DeltaPlan,
    check_files,
    plan_delta,
    scan_data_dir,
)
from pitrflow.engines.postgres.bundles.fetchplan import PG_CONTROL
from pitrflow.engines.postgres.bundles.fsutil import Owner, fsync_path
from pitrflow.engines.postgres.bundles.index import FileIndex
from pitrflow.engines.postgres.bundles.restorer import remove_tree_entry
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES, BackupManifest
from pitrflow.engines.postgres.restore.unpack import load_backup_index
from pitrflow.errors import RestoreRefusedError
from pitrflow.storage.base import Repository

MARKER = "pitrflow_delta.json"


@dataclass(frozen=True)
class DeltaStart:
    index: FileIndex
    plan: DeltaPlan


def read_system_identifier(pg_control: Path) -> str:
    with open(pg_control, "rb") as handle:
        head = handle.read(8)
    if len(head) != 8:
        raise RestoreRefusedError(f"{pg_control} is too short to be a control file",
                                  "restore into a new or empty directory instead of --delta")
    return str(struct.unpack("<Q", head)[0])


def _marker(pgdata: Path) -> dict[str, str] | None:
    try:
        doc = json.loads((pgdata / MARKER).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise RestoreRefusedError(f"{pgdata / MARKER} cannot be read",
                                  "restore into a new or empty directory instead of --delta"
                                  ) from None
    return doc if isinstance(doc, dict) else None


def _running_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[:1]
    except FileNotFoundError:
        return None
    try:
        pid = int(first[0]) if first else 0
    except ValueError:
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left by a server that crashed: not running
    except PermissionError:
        return pid  # alive, under another user
    return pid


def check_delta_target(chain: list[BackupManifest], pgdata: Path) -> None:
    """Every reason to refuse a delta restore into `pgdata`; changes nothing."""
    backup = chain[-1]
    if backup.layout != LAYOUT_BUNDLES:
        raise RestoreRefusedError(
            f"backup {backup.id} is a single-stream (v1) backup: a delta restore needs the "
            "file index of a v2 backup", "restore into a new or empty directory without --delta")
    if len(chain) > 1:
        raise RestoreRefusedError(
            f"the plan restores through incremental backup {backup.id}: a delta restore works "
            "from a full backup only", "restore into a new or empty directory without --delta")
    if not pgdata.is_dir():
        raise RestoreRefusedError(f"{pgdata} is not a directory",
                                  "a delta restore needs an existing data directory")
    if not (pgdata / "PG_VERSION").is_file():
        raise RestoreRefusedError(f"{pgdata} is not a PostgreSQL data directory (no PG_VERSION)",
                                  "a delta restore needs an existing data directory")
    pid = _running_pid(pgdata)
    if pid is not None:
        raise RestoreRefusedError(f"a server is running on {pgdata} (postmaster.pid, pid {pid})",
                                  f"stop it first: pg_ctl -D {pgdata} stop")
    control = pgdata / PG_CONTROL
    if control.is_file():
        found, source = read_system_identifier(control), PG_CONTROL
    else:
        marker = _marker(pgdata)
        if marker is None:
            raise RestoreRefusedError(
                f"{pgdata} has no {PG_CONTROL} and no {MARKER} of an interrupted delta restore",
                "restore into a new or empty directory without --delta")
        found, source = str(marker.get("system_identifier")), MARKER
    if found != backup.system_identifier:
        raise RestoreRefusedError(
            f"{pgdata} belongs to another cluster (system identifier {found} in {source}; "
            f"backup {backup.id} is of {backup.system_identifier})",
            "a delta restore only reuses the files of the same cluster")


def start_delta(repo: Repository, backup: BackupManifest, pgdata: Path, user: str | None,
                trust_mtime: bool, threads: int) -> DeltaStart:
    """Mark the directory as being restored, then plan: compare, and remove what must go."""
    index = load_backup_index(repo, backup)
    marker = pgdata / MARKER
    marker.write_text(json.dumps({"system_identifier": backup.system_identifier,
                                  "backup": backup.id,
                                  "started": datetime.now(UTC).isoformat()}) + "\n")
    owner = Owner.of(user)
    if owner is not None:
        os.chown(marker, owner.uid, owner.gid)
    fsync_path(marker)
    # From here on this directory cannot start until the delta restore completes.
    with contextlib.suppress(FileNotFoundError):
        (pgdata / PG_CONTROL).unlink()
    fsync_path(pgdata, directory=True)
    local = scan_data_dir(pgdata, skip=(MARKER,))
    plan = plan_delta(index, local, backup.start_time.timestamp(), trust_mtime)
    check_files(plan, index, pgdata, threads)
    for path in plan.remove:
        remove_tree_entry(pgdata / path)
    return DeltaStart(index, plan)


def finish_delta(pgdata: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (pgdata / MARKER).unlink()
