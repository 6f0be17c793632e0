"""The previous release's single-stream backup writer (layout v1, "stream"), kept for tests.

Before layout v2, a worker-compressed backup was pg_basebackup's whole tar
compressed as ONE zstd stream (base.tar.zst) beside its backup_manifest, with
a format-1 manifest.  Repositories are full of such backups, and they must
keep restoring, verifying and expiring: `take_v1_stream_backup` takes one
exactly the way that code did (the code below is that code), through the
same take_backup that writes the manifest last.
"""

from __future__ import annotations

import tarfile
import time
from typing import BinaryIO

import pytest
import zstandard

from pitrflow import procs
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import commands
from pitrflow.engines.postgres.backup import basebackup
from pitrflow.engines.postgres.backup.pgmanifest import parse_pg_manifest
from pitrflow.engines.postgres.backup.produce import Produced, Run
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_STREAM, BackupManifest, FileEntry
from pitrflow.engines.postgres.connection import libpq_args
from pitrflow.errors import CommandFailedError
from pitrflow.storage.base import CHUNK, AtomicWriter, Repository
from pitrflow.storage.layout import backup_object


class _TeeReader:
    """Everything tarfile reads is also compressed into the writer."""

    def __init__(self, source: BinaryIO, compressor: zstandard.ZstdCompressionChunker,
                 writer: AtomicWriter) -> None:
        self._source = source
        self._chunker = compressor
        self._writer = writer
        self.raw_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n if n and n > 0 else CHUNK)
        if data:
            self.raw_bytes += len(data)
            for piece in self._chunker.compress(data):
                self._writer.write(piece)
        return data

    def finish(self) -> None:
        while True:
            data = self._source.read(CHUNK)
            if not data:
                break
            self.raw_bytes += len(data)
            for piece in self._chunker.compress(data):
                self._writer.write(piece)
        for piece in self._chunker.finish():
            self._writer.write(piece)


def compress_tar_stream(source: BinaryIO, writer: AtomicWriter, level: int,
                        threads: int) -> tuple[bytes | None, int]:
    """Stream `source` into `writer` as zstd; returns (backup_manifest bytes, raw size)."""
    compressor = zstandard.ZstdCompressor(level=level, threads=max(threads, 0))
    tee = _TeeReader(source, compressor.chunker(chunk_size=CHUNK), writer)
    manifest: bytes | None = None
    with tarfile.open(fileobj=tee, mode="r|", bufsize=CHUNK) as archive:  # type: ignore[call-overload]
        for member in archive:
            if member.name == "backup_manifest" and member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    manifest = handle.read()
    tee.finish()
    return manifest, tee.raw_bytes


def _streamed(run: Run) -> Produced:
    """One uncompressed tar on stdout, compressed by the worker into the repository."""
    instance, repo, backup_id = run.instance, run.repo, run.backup_id
    argv = commands.basebackup_argv(run.bins, libpq_args(instance), None, label=run.label,
                                    compress=[], incremental_manifest=run.parent_manifest_file,
                                    max_rate=instance.max_rate)
    level = instance.compress_level if instance.compress != "none" else 1
    tar_key = backup_object(instance.name, backup_id, "base.tar.zst")
    deadline = time.monotonic() + instance.backup_timeout_seconds
    writer = repo.open_writer(tar_key)
    run.published.append(tar_key)
    try:
        with procs.spawn(argv, env=run.env, secrets=run.secrets, name="pg_basebackup") as (
                proc, tail):
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
    run.published.append(manifest_key_)
    manifest_info = repo.put_bytes(manifest_key_, manifest_bytes)
    pg_facts = parse_pg_manifest(manifest_bytes, manifest_key_)
    assert tar_info.sha256 is not None and manifest_info.sha256 is not None
    files = [FileEntry("backup_manifest", manifest_info.size, manifest_info.sha256),
             FileEntry("base.tar.zst", tar_info.size, tar_info.sha256)]
    return Produced(files, pg_facts,
                    f"worker-zstd:level={level},threads={instance.compress_workers}",
                    LAYOUT_STREAM)


def take_v1_stream_backup(instance: InstanceConfig, repo: Repository) -> BackupManifest:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(basebackup, "_produce", _streamed)
        manifest = basebackup.take_backup(instance, repo).manifest
    assert manifest.layout == LAYOUT_STREAM and manifest.file("base.tar.zst") is not None
    return manifest
