"""Full (and incremental) base backups with pg_basebackup into the repository.

Two ways to produce one (chosen by the instance's `compress`): the v2 layout,
cut into independently compressed bundles by the worker (bundled.py, the
default), or v1 with zstd on the database host into staging (staged.py).
A cluster with user tablespaces always gets v2, from one compressed archive
per tablespace (tablespaced.py).  Every backup records the cluster's
tablespaces and databases (catalog/cluster.py).
Either way every object is stored and checksummed first and the manifest is
written last.  Any failure removes what was stored, and a killed run leaves
objects without a manifest, which no reader accepts as a backup.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pitrflow import __version__
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import sql
from pitrflow.engines.postgres.backup.bundled import produce_bundled
from pitrflow.engines.postgres.backup.capabilities import (
    known_without_server_zstd,
    remember_without_server_zstd,
)
from pitrflow.engines.postgres.backup.produce import Produced, Run
from pitrflow.engines.postgres.backup.staged import produce_staged
from pitrflow.engines.postgres.backup.tablespaced import produce_tablespaced
from pitrflow.engines.postgres.binaries import find_binaries
from pitrflow.engines.postgres.catalog.cluster import Tablespace, layout_extra, merge_databases
from pitrflow.engines.postgres.catalog.manifest import BackupManifest, FileEntry, dump_manifest
from pitrflow.engines.postgres.catalog.snapshot import Catalog, read_catalog
from pitrflow.engines.postgres.connection import connect, libpq_env
from pitrflow.engines.postgres.drill.baseline_source import record_backup_baseline
from pitrflow.engines.postgres.restore.targets import NEXT_XID
from pitrflow.engines.postgres.wal.slots import ensure_slot
from pitrflow.errors import BackupRefusedError, CommandFailedError, PitrError
from pitrflow.storage.base import Repository
from pitrflow.storage.keyed import encryption_note, start_new_epoch
from pitrflow.storage.layout import backup_prefix, manifest_key

log = logging.getLogger("pitrflow.backup")


@dataclass(frozen=True)
class BackupOutcome:
    manifest: BackupManifest
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def throughput_mb_s(self) -> float:
        return self.manifest.database_size_bytes / 1e6 / max(self.seconds, 1e-6)


def new_backup_id(start: datetime, kind: str, catalog: Catalog) -> str:
    base = start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-F" if kind == "full" else "-I")
    taken = {b.id for b in catalog.backups} | set(catalog.rejected)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}{n}"
    return candidate


def _remove_objects(repo: Repository, keys: list[str]) -> None:
    for key in keys:
        try:
            repo.delete(key)
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the real error
            log.warning("could not remove %s after a failed backup: %s", key, exc)


def take_backup(
    instance: InstanceConfig,
    repo: Repository,
    *,
    parent: BackupManifest | None = None,
    parent_manifest_file: Path | None = None,
    full_size_reference: int | None = None,
) -> BackupOutcome:
    """Run pg_basebackup and publish the result as one backup in the repository."""
    kind = "incremental" if parent is not None else "full"
    started = time.monotonic()
    if kind == "full":
        # A fresh data key for each full chain (encrypted repositories; else a no-op).  It
        # also proves the master key opens the repository before anything is started.
        start_new_epoch(repo)
    with connect(instance) as conn:
        facts = sql.server_facts(conn)
        if facts.wal_level == "minimal":
            raise BackupRefusedError(
                f"instance {instance.name} runs with wal_level = minimal",
                "set wal_level = replica (or logical) and restart the server",
            )
        # The slot must exist before the backup starts so the WAL from its
        # start onward is kept until a ship run stores it.
        ensure_slot(conn, instance.slot_name)
        start_time = facts.now
        size_estimate = sql.databases_size(conn)
        tablespaces_at_start = sql.user_tablespaces(conn)
        databases_at_start = sql.databases(conn)
    bins = find_binaries(facts.major, instance.bin_dir)
    catalog = read_catalog(repo, instance.name)
    backup_id = new_backup_id(start_time, kind, catalog)
    env, secrets = libpq_env(instance)
    published: list[str] = []
    label = f"pitrflow {backup_id}"
    run = Run(instance, repo, bins, facts.major, backup_id, label, env, secrets, published,
              parent_manifest_file, size_estimate,
              tuple(Tablespace(*row) for row in tablespaces_at_start))
    try:
        produced = _produce(run)
        files, pg_facts = produced.files, produced.pg_facts
        with connect(instance) as conn:
            stop_time = sql.server_now(conn)
            next_xid = sql.next_xid(conn)
            # A database created while the backup ran may have files in it: named too.
            cluster = layout_extra(produced.tablespaces,
                                   merge_databases(databases_at_start, sql.databases(conn)))
        manifest = BackupManifest(
            id=backup_id, instance=instance.name, engine="postgresql", type=kind,
            parent=parent.id if parent else None,
            start_time=start_time, stop_time=stop_time,
            start_lsn=pg_facts.start_lsn, stop_lsn=pg_facts.stop_lsn,
            timeline=pg_facts.timeline, server_version=facts.version_num,
            system_identifier=facts.system_identifier, segment_size=facts.segment_size,
            files=tuple(files), database_size_bytes=pg_facts.database_size_bytes,
            duration_seconds=round(time.monotonic() - started, 3),
            compression=produced.compression,
            tool_version=__version__,
            extra={**_extra(bins.major, facts.data_checksums, files, full_size_reference,
                            encryption_note(repo)),
                   NEXT_XID: next_xid, **cluster},
            layout=produced.layout, index=produced.index,
        )
        # The manifest goes last: until it exists, nothing above is a backup.
        repo.put_bytes(manifest_key(instance.name, backup_id), dump_manifest(manifest))
    except BaseException as exc:
        _remove_objects(repo, published)
        if isinstance(exc, PitrError):
            exc.message = f"backup {backup_id} of {instance.name} failed: {exc.message}"
        raise
    log.info("backup %s complete: %d objects, %d bytes stored (layout %s)", backup_id,
             len(files), manifest.size_bytes, manifest.layout)
    record_backup_baseline(instance, repo, manifest)  # the drill's; never raises
    return BackupOutcome(manifest, time.monotonic() - started, tuple(produced.notes))


def _extra(pg_basebackup_major: int, data_checksums: bool, files: list[FileEntry],
           full_size_reference: int | None, encryption: dict[str, str] | None,
           ) -> dict[str, object]:
    extra: dict[str, object] = {"pg_basebackup_major": pg_basebackup_major,
                                "data_checksums": data_checksums}
    if encryption is not None:
        extra["encryption"] = encryption
    if full_size_reference is not None:
        stored = sum(f.size for f in files)
        extra["saved_bytes_vs_full"] = full_size_reference - stored
        extra["saved_ratio_vs_full"] = round(1 - stored / max(full_size_reference, 1), 3)
    return extra


def backup_keys(instance: str, manifest: BackupManifest) -> list[str]:
    prefix = backup_prefix(instance, manifest.id)
    return [prefix + f.name for f in manifest.files]


_NO_SERVER_COMPRESSION = "does not support compression"


def _produce(run: Run) -> Produced:
    """Run pg_basebackup the way the instance asks for; objects land in `run.published`."""
    instance = run.instance
    if run.tablespaces:
        # pg_basebackup's stdout carries one tablespace only: one archive each, staged.
        produced = produce_tablespaced(run)
        if instance.compress == "server":
            produced.notes.append("the cluster has user tablespaces: this backup is in layout "
                                  "v2 (compressed by the worker), not the server's v1")
        return produced
    if instance.compress != "server":
        return produce_bundled(run)
    # Server-side zstd needs local staging on the repository's file system; an
    # object store gets the v2 layout, compressed by the worker, with no local copy.
    if run.server_major < 15 or not run.repo.features.local_staging:
        why = ("PostgreSQL 15 or newer" if run.server_major < 15
               else "a repository on a local file system")
        produced = produce_bundled(run)
        produced.notes.append(f"compress = \"server\" needs {why}: the worker compressed "
                              "this backup (layout v2) instead")
        return produced
    probed = known_without_server_zstd(run.repo, instance.name, run.server_major)
    if probed is None:
        try:
            return produce_staged(run)
        except CommandFailedError as exc:
            if _NO_SERVER_COMPRESSION not in exc.message:
                raise
        remember_without_server_zstd(run.repo, instance.name, run.server_major)
        run.published.clear()  # the failed attempt stored nothing
        probed = "now"
    note = (f"the server of {instance.name} cannot compress with zstd (found {probed}, "
            "remembered): the worker compresses this backup (layout v2)")
    log.info("%s", note)
    produced = produce_bundled(run)
    produced.notes.append(note)
    return produced
