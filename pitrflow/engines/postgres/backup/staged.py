"""Layout v1 with server-side zstd: pg_basebackup compresses on the database host.

pg_basebackup writes base.tar.zst (and pg_wal.tar) into a staging directory
on the repository's own file system; the files are then moved in by rename.
This is the fastest backup where the database host has idle cores, but it
restores as one zstd stream on one core (`compress = "server"`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import zstandard

from pitrflow import procs
from pitrflow.engines.postgres import commands
from pitrflow.engines.postgres.backup.pgmanifest import read_pg_manifest
from pitrflow.engines.postgres.backup.produce import Produced, Run
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_STREAM, FileEntry
from pitrflow.engines.postgres.connection import libpq_args
from pitrflow.storage.layout import backup_object

log = logging.getLogger("pitrflow.backup")


def _zstd_file(path: Path, level: int, threads: int) -> Path:
    target = path.with_name(path.name + ".zst")
    compressor = zstandard.ZstdCompressor(level=level, threads=max(threads, 0))
    with open(path, "rb") as source, open(target, "wb") as sink:
        compressor.copy_stream(source, sink, read_size=4 * 1024 * 1024)
    path.unlink()
    return target


def produce_staged(run: Run) -> Produced:
    """Server-side zstd into a staging directory on the repository's file system."""
    instance, repo = run.instance, run.repo
    compress = commands.compress_option("server", instance.compress_level,
                                        instance.compress_workers, run.server_major)
    staging = repo.staging_dir()
    try:
        out_dir = staging / "data"
        argv = commands.basebackup_argv(run.bins, libpq_args(instance), out_dir,
                                        label=run.label, compress=compress,
                                        incremental_manifest=run.parent_manifest_file,
                                        max_rate=instance.max_rate)
        log.info("backup %s of %s: %s", run.backup_id, instance.name, " ".join(argv[1:]))
        procs.run(argv, env=run.env, secrets=run.secrets,
                  timeout=instance.backup_timeout_seconds, what="pg_basebackup")
        pg_facts = read_pg_manifest(out_dir / "backup_manifest")
        files: list[FileEntry] = []
        for path in sorted(out_dir.iterdir(), key=lambda p: p.name):
            if path.name == "pg_wal.tar":
                # pg_basebackup leaves the streamed WAL uncompressed, even with
                # server-side compression: a full segment per backup otherwise.
                path = _zstd_file(path, instance.compress_level, instance.compress_workers)
            key = backup_object(instance.name, run.backup_id, path.name)
            run.published.append(key)
            info = repo.put_file(key, path, move=True)
            assert info.sha256 is not None
            files.append(FileEntry(path.name, info.size, info.sha256))
    finally:
        repo.discard_staging(staging)
    return Produced(files, pg_facts, compress[0].removeprefix("--compress="), LAYOUT_STREAM)
