"""Layout v2 for a cluster with user tablespaces: one compressed archive per tablespace.

pg_basebackup sends only one tablespace to standard output, and it refuses
a target directory that is not empty, so named pipes cannot be laid out for
it beforehand.  Here it writes into a private directory under the
instance's `staging_dir`: one tar per tablespace (`<oid>.tar.<ext>`, and
`base.tar.<ext>` for the data directory) and then `backup_manifest`.  The
archives are compressed, by the server where it can (zstd, on its own
threads), else by pg_basebackup (zstd, else gzip), so the worker's disk
never holds the database uncompressed; a pg_basebackup that can compress
with neither is refused.  Each archive is read while it is written
(staging.py), decompressed, and stored as v2 bundles: its members indexed
under pg_tblspc/<oid>/, its objects named after the tablespace.  What the
server's backup_manifest lists is then checked as on the streamed path.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from pitrflow import procs
from pitrflow.engines.postgres import commands, sql
from pitrflow.engines.postgres.backup.capabilities import (
    known_without_server_zstd,
    remember_without_server_zstd,
)
from pitrflow.engines.postgres.backup.pgmanifest import parse_pg_manifest
from pitrflow.engines.postgres.backup.produce import Produced, Run
from pitrflow.engines.postgres.backup.staging import (
    ARCHIVE,
    POLL_SECONDS,
    GrowingFile,
    Writer,
    decompressed,
)
from pitrflow.engines.postgres.binaries import client_compresses_with
from pitrflow.engines.postgres.bundles.crosscheck import check_against_pg_manifest
from pitrflow.engines.postgres.bundles.index import INDEX_NAME, dump_index
from pitrflow.engines.postgres.bundles.plan import tablespace_object_prefix
from pitrflow.engines.postgres.bundles.writer import PG_MANIFEST, TarSource, write_archives
from pitrflow.engines.postgres.catalog.cluster import Tablespace, merge_tablespaces
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES, FileEntry
from pitrflow.engines.postgres.connection import connect, libpq_args
from pitrflow.errors import BackupRefusedError, CommandFailedError
from pitrflow.progress import Progress
from pitrflow.storage.base import MIB
from pitrflow.storage.layout import backup_object, backup_prefix

log = logging.getLogger("pitrflow.backup")

_UNSUPPORTED = "does not support compression"
_SERVER_ZSTD = "server-zstd"


def staging_compressions(server_major: int, workers: int, compress: str) -> list[str]:
    """pg_basebackup --compress values to try, best first (pure).

    Staging only has to be small and cheap to write: zstd level 1 on the
    server's threads first (cheap, and it spares the worker), then zstd by
    pg_basebackup, then gzip level 1 on the side `compress` prefers (the
    worker, unless it says "server").  Each is tried until one is supported.
    """
    server = server_major >= 15
    zstd = ([f"server-zstd:level=1,workers={max(workers, 1)}"] if server else []) + [
        "client-zstd:level=1"]
    gzip = ["client-gzip:level=1"] + (["server-gzip:level=1"] if server else [])
    if compress == "server":
        gzip.reverse()
    return zstd + gzip


def produce_tablespaced(run: Run) -> Produced:
    instance = run.instance
    instance.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _remove_stale(instance.staging_dir, instance.name, instance.backup_timeout_seconds)
    tried: list[str] = []
    methods = staging_compressions(run.server_major, instance.compress_workers,
                                   instance.compress)
    # A server found unable to compress with zstd is not asked again (capabilities.py):
    # a refused pg_basebackup in every backup's log would read as a failure.
    probed = known_without_server_zstd(run.repo, instance.name, run.server_major)
    if probed is not None:
        methods = [m for m in methods if not m.startswith(_SERVER_ZSTD)]
        tried.append(f"{_SERVER_ZSTD} (found {probed}, remembered)")
    # Nor is the worker's pg_basebackup asked for what it was built without.
    pg_basebackup = run.bins.tool("pg_basebackup")
    for method in [m for m in methods if m.startswith("client-")]:
        algorithm = method.removeprefix("client-").split(":")[0]
        if not client_compresses_with(pg_basebackup, algorithm):
            methods.remove(method)
            tried.append(f"{method} (this pg_basebackup has no {algorithm})")
    for method in methods:
        staging = instance.staging_dir / f"{instance.name}-{run.backup_id}"
        try:
            produced = _produce_with(run, method, staging)
        except _Unsupported as exc:
            tried.append(method)
            log.info("backup %s: pg_basebackup cannot stage with %s: %s", run.backup_id,
                     method, exc)
            if method.startswith(_SERVER_ZSTD):
                remember_without_server_zstd(run.repo, instance.name, run.server_major)
            continue
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if tried:
            produced.notes.append(f"user tablespaces: staged compressed with {method} "
                                  f"({', '.join(tried)}: not supported here)")
        return produced
    raise BackupRefusedError(
        f"instance {instance.name} has user tablespaces, and pg_basebackup can stage them "
        f"compressed with none of: {', '.join(tried)}",
        "use a pg_basebackup built with zstd or zlib (bin_dir): a cluster with tablespaces is "
        "never staged uncompressed")


def _remove_stale(staging_dir: Path, instance: str, timeout: int) -> None:
    """What a killed run left: older than any backup may run, so no running backup's."""
    cutoff = time.time() - timeout
    ours = re.compile(rf"{re.escape(instance)}-\d{{8}}T\d{{6}}Z-[FI]\d*")
    for left in staging_dir.iterdir():
        if ours.fullmatch(left.name) and left.is_dir() and left.stat().st_mtime < cutoff:
            log.info("removing %s, left by an interrupted backup", left)
            shutil.rmtree(left, ignore_errors=True)


class _Unsupported(Exception):
    """pg_basebackup refused this compression method before writing anything."""


def _produce_with(run: Run, method: str, staging: Path) -> Produced:
    instance, repo = run.instance, run.repo
    settings = repo.transfer
    level = instance.compress_level if instance.compress != "none" else 1
    argv = commands.basebackup_argv(run.bins, libpq_args(instance), staging, label=run.label,
                                    compress=[f"--compress={method}"],
                                    incremental_manifest=run.parent_manifest_file,
                                    max_rate=instance.max_rate, manifest_checksums="CRC32C",
                                    wal_method="fetch")
    log.info("backup %s of %s (user tablespaces, staged in %s): %s", run.backup_id,
             instance.name, staging, " ".join(argv[1:]))
    deadline = time.monotonic() + instance.backup_timeout_seconds
    progress = Progress(f"backup of {instance.name}", run.size_estimate)
    prefix = backup_prefix(instance.name, run.backup_id)
    seen: list[str] = []
    index = None
    with procs.spawn(argv, env=run.env, secrets=run.secrets, name="pg_basebackup") as (
            proc, tail):
        writer = Writer(proc, staging, deadline, lambda code: _failed(list(tail), code))
        try:
            index, _, _ = write_archives(_archives(writer, seen), repo, prefix, settings, level,
                                         run.published, progress)
        except CommandFailedError:
            # Still running, or exited 0: the failure is ours (a 0 exit would otherwise
            # fall through with no index); a failed pg_basebackup is said below instead.
            if proc.poll() in (None, 0):
                raise
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    # Out of the block, stderr is drained to its end.
    if code != 0 and not seen and any(_UNSUPPORTED in line for line in tail):
        raise _Unsupported(procs.most_telling_line(list(tail)) or "unsupported")
    if code != 0:
        raise _failed(list(tail), code)
    assert index is not None
    tablespaces = _tablespaces_of(run, seen)
    index = replace(index, tablespaces=tablespaces)
    pg_manifest = (staging / PG_MANIFEST).read_bytes()
    checked = check_against_pg_manifest(index, pg_manifest, run.backup_id)
    progress.finish()
    pg_key = backup_object(instance.name, run.backup_id, PG_MANIFEST)
    run.published.append(pg_key)
    pg_info = repo.put_bytes(pg_key, pg_manifest)
    index_key = backup_object(instance.name, run.backup_id, INDEX_NAME)
    run.published.append(index_key)
    index_info = repo.put_bytes(index_key, dump_index(index))
    assert pg_info.sha256 is not None and index_info.sha256 is not None
    files = [FileEntry(PG_MANIFEST, pg_info.size, pg_info.sha256),
             FileEntry(INDEX_NAME, index_info.size, index_info.sha256)]
    files += [FileEntry(o.name, o.size, o.sha256) for o in index.objects]
    log.info("backup %s: %d files of %d tablespaces in %d objects, %d checked against the "
             "server's backup_manifest", run.backup_id, len(index.entries),
             len(tablespaces) + 1, len(index.objects), checked)
    compression = (f"worker-zstd:level={level},threads={settings.process_max},"
                   f"frames={settings.frame_size // MIB}MiB,"
                   f"bundles={settings.bundle_size // MIB}MiB,staged={method}")
    return Produced(files, parse_pg_manifest(pg_manifest, pg_key), compression,
                    LAYOUT_BUNDLES, index=INDEX_NAME, tablespaces=tablespaces)


def _archives(writer: Writer, seen: list[str]) -> Iterator[TarSource]:
    """Each archive once it appears: complete ones first, then the one being written."""
    directory = writer.directory
    while True:
        pending = sorted(p.name for p in _listing(directory)
                         if ARCHIVE.match(p.name) and p.name not in seen)
        if not pending:
            if writer.exited():
                return
            time.sleep(POLL_SECONDS)
            continue
        complete = [n for n in pending if not writer.holds_open(n)]
        name = complete[0] if complete else pending[0]
        seen.append(name)
        stem = name.split(".", 1)[0]
        where = f"pg_basebackup ({name})"
        raw = GrowingFile(directory / name, writer)
        try:
            stream = decompressed(raw, name, where)
            if stem == "base":
                yield TarSource(stream, where)
            else:
                oid = int(stem)
                yield TarSource(stream, where, f"pg_tblspc/{oid}/",
                                tablespace_object_prefix(oid))
        finally:
            raw.close()
        (directory / name).unlink(missing_ok=True)


def _listing(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []  # not created yet, or removed by a failed pg_basebackup


def _tablespaces_of(run: Run, seen: list[str]) -> tuple[Tablespace, ...]:
    """The tablespaces whose archives were stored, named as the server named them when the
    backup started (or, for one created meanwhile, now)."""
    oids = {int(n.split(".", 1)[0]) for n in seen if not n.startswith("base.")}
    known = {t.oid: t for t in run.tablespaces}
    if not oids <= set(known):
        with connect(run.instance) as conn:
            known = {t.oid: t for t in merge_tablespaces(
                [(t.oid, t.name, t.location) for t in run.tablespaces],
                sql.user_tablespaces(conn))}
    missing = sorted(oids - set(known))
    if missing:
        raise CommandFailedError(
            f"tablespace OID {missing[0]} was dropped while the backup ran",
            "take the backup again")
    return tuple(known[oid] for oid in sorted(oids))


def _failed(tail: list[str], code: int) -> CommandFailedError:
    return CommandFailedError(f"pg_basebackup failed: {procs.most_telling_line(tail) or code}",
                              "see the log for its full output; a full staging_dir says "
                              "\"No space left on device\"")
