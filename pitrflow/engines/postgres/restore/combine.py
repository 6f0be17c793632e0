"""Rebuild a data directory from a full backup and its incremental chain.

Each link is unpacked into a scratch directory on the target's file system,
then pg_combinebackup writes the synthetic full backup and pg_verifybackup
checks it against the newest link's manifest before recovery may start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pitrflow import procs
from pitrflow.engines.postgres import commands
from pitrflow.engines.postgres.binaries import PgBinaries
from pitrflow.engines.postgres.catalog.manifest import BackupManifest
from pitrflow.engines.postgres.restore.unpack import unpack_backup
from pitrflow.engines.postgres.sysuser import chown_tree
from pitrflow.storage.base import Repository

log = logging.getLogger("pitrflow.restore")


def copy_mode(major: int, scratch: Path) -> str | None:
    """The fastest correct pg_combinebackup copy mode for this file system.

    The unpacked links are thrown away afterwards, so PostgreSQL 18's hard
    links are safe and copy nothing; PostgreSQL 17 gets reflinks where the
    file system supports them, else copy_file_range.
    """
    if major >= 18:
        return "link"
    if _supports_reflink(scratch):
        return "clone"
    return "copy-file-range"


def _supports_reflink(directory: Path) -> bool:
    import fcntl

    src = directory / ".reflink-probe-src"
    dst = directory / ".reflink-probe-dst"
    try:
        src.write_bytes(b"x" * 4096)
        with open(src, "rb") as s, open(dst, "wb") as d:
            fcntl.ioctl(d.fileno(), 0x40049409, s.fileno())  # FICLONE
        return True
    except OSError:
        return False
    finally:
        for p in (src, dst):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _combine_line(line: str) -> None:
    # --link is chosen knowing the unpacked links are thrown away right after, so its
    # warning about modifying the inputs is expected: not worth a line per restore.
    if "--link mode was used" not in line:
        log.info("pg_combinebackup: %s", line)


def combine_chain(repo: Repository, chain: list[BackupManifest], pgdata: Path,
                  bins: PgBinaries, run_as: str | None) -> dict[str, float]:
    phases: dict[str, float] = {}
    scratch = pgdata.parent / f".pitrflow-combine-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(mode=0o700)
    try:
        if run_as is not None:
            chown_tree(scratch, run_as)
        started = time.monotonic()
        dirs = [scratch / backup.id for backup in chain]
        # Links unpack independently: two at a time keeps both cores busy.
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(unpack_backup, repo, backup, target, run_as)
                           for backup, target in zip(chain, dirs, strict=True)]:
                future.result()
        for target in dirs:
            os.chmod(target, 0o700)
        phases["fetch"] = time.monotonic() - started
        started = time.monotonic()
        # pg_combinebackup accepts an existing empty output directory, which
        # lets it run as the server's user under a parent that user cannot write.
        mode = copy_mode(bins.major, scratch)
        procs.run(commands.combinebackup_argv(bins, dirs, pgdata, mode), user=run_as,
                  what="pg_combinebackup", line_sink=_combine_line)
        phases["rebuild"] = time.monotonic() - started
        started = time.monotonic()
        procs.run(commands.verifybackup_argv(bins, pgdata), user=run_as, what="pg_verifybackup")
        phases["verify"] = time.monotonic() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return phases
