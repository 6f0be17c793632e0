"""Compress pg_basebackup's tar stream on the fly, picking out its backup_manifest.

When the server cannot compress (a build without zstd) or the config asks
for client-side compression, pg_basebackup writes one uncompressed tar to
stdout; this module compresses it with multi-threaded zstd straight into a
repository writer, so the worker needs no local disk in proportion to the
database.  The tar headers are parsed as the bytes pass so PostgreSQL's own
backup_manifest (the stream's last member) can be kept beside the backup.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO

import zstandard

from pitrflow.storage.base import CHUNK, AtomicWriter


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
