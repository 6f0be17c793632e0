"""Full (and incremental) base backups with pg_basebackup into the repository.

pg_basebackup writes into a staging directory on the repository's own file
system; only after it succeeds are the files moved in, checksummed, and the
manifest written last.  Any failure removes what was moved, and a killed run
leaves objects without a manifest, which no reader accepts as a backup.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from pitrflow import __version__, procs
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import commands, sql
from pitrflow.engines.postgres.backup.pgmanifest import (
    PgManifestFacts,
    parse_pg_manifest,
    read_pg_manifest,
)
from pitrflow.engines.postgres.backup.tarstream import compress_tar_stream
from pitrflow.engines.postgres.binaries import PgBinaries, find_binaries
from pitrflow.engines.postgres.catalog.manifest import BackupManifest, FileEntry, dump_manifest
from pitrflow.engines.postgres.catalog.snapshot import Catalog, read_catalog
from pitrflow.engines.postgres.connection import connect, libpq_args, libpq_env
from pitrflow.engines.postgres.drill.baseline_source import record_backup_baseline
from pitrflow.engines.postgres.restore.targets import NEXT_XID
from pitrflow.engines.postgres.wal.slots import ensure_slot
from pitrflow.errors import BackupRefusedError, CommandFailedError, PitrError
from pitrflow.storage.base import Repository
from pitrflow.storage.keyed import encryption_note, start_new_epoch
from pitrflow.storage.layout import backup_object, backup_prefix, manifest_key

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
    bins = find_binaries(facts.major, instance.bin_dir)
    catalog = read_catalog(repo, instance.name)
    backup_id = new_backup_id(start_time, kind, catalog)
    env, secrets = libpq_env(instance)
    published: list[str] = []
    label = f"pitrflow {backup_id}"
    try:
        files, pg_facts, compression = _produce(
            instance, repo, bins, facts.major, backup_id, label, env, secrets, published,
            parent_manifest_file)
        with connect(instance) as conn:
            stop_time = sql.server_now(conn)
            next_xid = sql.next_xid(conn)
        manifest = BackupManifest(
            id=backup_id, instance=instance.name, engine="postgresql", type=kind,
            parent=parent.id if parent else None,
            start_time=start_time, stop_time=stop_time,
            start_lsn=pg_facts.start_lsn, stop_lsn=pg_facts.stop_lsn,
            timeline=pg_facts.timeline, server_version=facts.version_num,
            system_identifier=facts.system_identifier, segment_size=facts.segment_size,
            files=tuple(files), database_size_bytes=pg_facts.database_size_bytes,
            duration_seconds=round(time.monotonic() - started, 3),
            compression=compression,
            tool_version=__version__,
            extra={**_extra(bins.major, facts.data_checksums, files, full_size_reference,
                            encryption_note(repo)),
                   NEXT_XID: next_xid},
        )
        # The manifest goes last: until it exists, nothing above is a backup.
        repo.put_bytes(manifest_key(instance.name, backup_id), dump_manifest(manifest))
    except BaseException as exc:
        _remove_objects(repo, published)
        if isinstance(exc, PitrError):
            exc.message = f"backup {backup_id} of {instance.name} failed: {exc.message}"
        raise
    log.info("backup %s complete: %d files, %d bytes stored", backup_id, len(files),
             manifest.size_bytes)
    record_backup_baseline(instance, repo, manifest)  # the drill's; never raises
    return BackupOutcome(manifest, time.monotonic() - started)


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


def _zstd_file(path: Path, level: int, threads: int) -> Path:
    target = path.with_name(path.name + ".zst")
    compressor = zstandard.ZstdCompressor(level=level, threads=max(threads, 0))
    with open(path, "rb") as source, open(target, "wb") as sink:
        compressor.copy_stream(source, sink, read_size=4 * 1024 * 1024)
    path.unlink()
    return target


def _produce(instance: InstanceConfig, repo: Repository, bins: PgBinaries, server_major: int,
             backup_id: str, label: str, env: dict[str, str], secrets: list[str],
             published: list[str], parent_manifest_file: Path | None,
             ) -> tuple[list[FileEntry], PgManifestFacts, str]:
    """Run pg_basebackup the fastest way the server allows; objects land in `published`."""
    # Server-side zstd needs local staging on the repository's file system; an object
    # store gets the worker-compressed stream instead, with no local copy.
    if instance.compress == "server" and server_major >= 15 and repo.features.local_staging:
        try:
            return _to_staging(instance, repo, bins, server_major, backup_id, label, env,
                               secrets, published, parent_manifest_file)
        except CommandFailedError as exc:
            if _NO_SERVER_COMPRESSION not in exc.message:
                raise
            log.info("server of %s cannot compress with zstd; compressing on the worker",
                     instance.name)
    return _streamed(instance, repo, bins, backup_id, label, env, secrets, published,
                     parent_manifest_file)


def _to_staging(instance: InstanceConfig, repo: Repository, bins: PgBinaries, server_major: int,
                backup_id: str, label: str, env: dict[str, str], secrets: list[str],
                published: list[str], parent_manifest_file: Path | None,
                ) -> tuple[list[FileEntry], PgManifestFacts, str]:
    """Server-side zstd into a staging directory on the repository's file system."""
    compress = commands.compress_option("server", instance.compress_level,
                                        instance.compress_workers, server_major)
    staging = repo.staging_dir()
    try:
        out_dir = staging / "data"
        argv = commands.basebackup_argv(bins, libpq_args(instance), out_dir, label=label,
                                        compress=compress,
                                        incremental_manifest=parent_manifest_file,
                                        max_rate=instance.max_rate)
        log.info("backup %s of %s: %s", backup_id, instance.name, " ".join(argv[1:]))
        procs.run(argv, env=env, secrets=secrets, timeout=instance.backup_timeout_seconds,
                  what="pg_basebackup")
        pg_facts = read_pg_manifest(out_dir / "backup_manifest")
        files: list[FileEntry] = []
        for path in sorted(out_dir.iterdir(), key=lambda p: p.name):
            if path.name == "pg_wal.tar":
                # pg_basebackup leaves the streamed WAL uncompressed, even with
                # server-side compression: a full segment per backup otherwise.
                path = _zstd_file(path, instance.compress_level, instance.compress_workers)
            key = backup_object(instance.name, backup_id, path.name)
            published.append(key)
            info = repo.put_file(key, path, move=True)
            assert info.sha256 is not None
            files.append(FileEntry(path.name, info.size, info.sha256))
    finally:
        repo.discard_staging(staging)
    return files, pg_facts, compress[0].removeprefix("--compress=")


def _streamed(instance: InstanceConfig, repo: Repository, bins: PgBinaries, backup_id: str,
              label: str, env: dict[str, str], secrets: list[str], published: list[str],
              parent_manifest_file: Path | None,
              ) -> tuple[list[FileEntry], PgManifestFacts, str]:
    """One uncompressed tar on stdout, compressed by the worker into the repository."""
    argv = commands.basebackup_argv(bins, libpq_args(instance), None, label=label,
                                    compress=[], incremental_manifest=parent_manifest_file,
                                    max_rate=instance.max_rate)
    log.info("backup %s of %s: %s", backup_id, instance.name, " ".join(argv[1:]))
    level = instance.compress_level if instance.compress != "none" else 1
    tar_key = backup_object(instance.name, backup_id, "base.tar.zst")
    deadline = time.monotonic() + instance.backup_timeout_seconds
    writer = repo.open_writer(tar_key)
    published.append(tar_key)
    try:
        with procs.spawn(argv, env=env, secrets=secrets, name="pg_basebackup") as (proc, tail):
            assert proc.stdout is not None
            manifest_bytes, _ = compress_tar_stream(proc.stdout, writer, level,
                                                    instance.compress_workers)
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if code != 0:
                raise CommandFailedError(
                    f"pg_basebackup failed: {procs.most_telling_line(list(tail)) or code}",
                    "see the log for its full output")
        if manifest_bytes is None:
            raise CommandFailedError("pg_basebackup's stream held no backup_manifest",
                                     "use pg_basebackup 13 or newer")
        tar_info = writer.commit()
    except BaseException:
        writer.abort()
        raise
    manifest_key_ = backup_object(instance.name, backup_id, "backup_manifest")
    published.append(manifest_key_)
    manifest_info = repo.put_bytes(manifest_key_, manifest_bytes)
    pg_facts = parse_pg_manifest(manifest_bytes, manifest_key_)
    assert tar_info.sha256 is not None and manifest_info.sha256 is not None
    files = [FileEntry("backup_manifest", manifest_info.size, manifest_info.sha256),
             FileEntry("base.tar.zst", tar_info.size, tar_info.sha256)]
    return files, pg_facts, f"worker-zstd:level={level},threads={instance.compress_workers}"
