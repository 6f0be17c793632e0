"""Cut pg_basebackup's tar stream into v2 objects, compressing on `process_max` threads.

Three stages, with memory bounded by a fixed number of frames in flight
whatever the database size:
- the calling thread reads the stream, parses each tar header, cuts the
  member into frames (plan.BundlePlanner) and computes the file's CRC32C
  as its bytes pass;
- `process_max` threads compress frames (one ZstdCompressor each; zstd
  releases the GIL, so they run on every core) and hash what they produce;
- one writer thread appends the compressed frames, in stream order, to
  their objects; each complete object is committed in the background
  (bundles.objects).
Each object ends with a small frame holding the two end-of-archive blocks,
so `zstd -d < object | tar -x` unpacks it by hand.  pg_basebackup's own
backup_manifest (the stream's last member) is kept apart for the caller.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import crc32c
import zstandard

from pitrflow.engines.postgres.bundles.index import FileIndex, Frame, IndexEntry
from pitrflow.engines.postgres.bundles.objects import ObjectSink
from pitrflow.engines.postgres.bundles.plan import BundlePlanner, Placement
from pitrflow.engines.postgres.bundles.tarparse import (
    END_OF_ARCHIVE,
    TarFormatError,
    TarMember,
    next_member,
    read_exact,
)
from pitrflow.progress import Progress
from pitrflow.storage.base import Repository, TransferSettings

log = logging.getLogger("pitrflow.bundles")

PG_MANIFEST = "backup_manifest"
# Small frames are handed to the compressors in groups of about this many raw bytes,
# so a bundle of 8 KB files does not cost one thread hand-off per file.
JOB_BYTES = 1024 * 1024


@dataclass
class _Entry:
    """An index entry being filled: the reader knows the member, the writer adds frames."""

    member: TarMember
    crc: int = 0
    frames: list[Frame] = field(default_factory=list)

    def freeze(self) -> IndexEntry:
        m = self.member
        checksum = self.crc.to_bytes(4, "little").hex() if m.type == "file" else ""
        return IndexEntry(path=m.name, type=m.type, size=m.size, mode=m.mode, mtime=m.mtime,
                          link=m.link, checksum=checksum, header_len=len(m.header),
                          frames=tuple(self.frames))


@dataclass
class _FrameJob:
    raw: bytearray
    object: str
    kind: str
    raw_offset: int
    entry: _Entry
    data_bytes: int
    crc: int  # of the file data in this frame alone


@dataclass
class _Job:
    frames: list[_FrameJob] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    raw_bytes: int = 0


@dataclass(frozen=True)
class WrittenBundles:
    index: FileIndex
    pg_manifest: bytes
    raw_bytes: int


_local = threading.local()


def _compress(frames: list[bytearray], level: int) -> list[tuple[bytes, str]]:
    compressors: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("zstd", {})
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=True)
    out = []
    for raw in frames:
        data = compressor.compress(raw)
        out.append((data, hashlib.sha256(data).hexdigest()))
    return out


class _Pipeline:
    def __init__(self, objects: ObjectSink, settings: TransferSettings, level: int,
                 progress: Progress | None) -> None:
        self.objects = objects
        self.level = level
        self.progress = progress
        workers = max(1, settings.process_max)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pitr-zstd")
        self.queue: queue.Queue[tuple[_Job, Future[list[tuple[bytes, str]]]] | None] = (
            queue.Queue(maxsize=2 * workers + 2))
        self.failure: list[BaseException] = []
        self.failed = threading.Event()
        self.writer = threading.Thread(target=self._write_loop, name="pitr-bundle-writer",
                                       daemon=True)
        self.writer.start()

    def submit(self, job: _Job) -> None:
        future = self.pool.submit(_compress, [f.raw for f in job.frames], self.level)
        self._put((job, future))

    def _put(self, item: tuple[_Job, Future[list[tuple[bytes, str]]]] | None) -> None:
        while True:
            if self.failed.is_set():
                raise self.failure[0]
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _write_loop(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                job, future = item
                for frame, (data, sha) in zip(job.frames, future.result(), strict=True):
                    offset = self.objects.append(frame.object, frame.kind, data, len(frame.raw))
                    frame.entry.frames.append(Frame(
                        frame.object, offset, len(data), frame.raw_offset, len(frame.raw), sha,
                        frame.crc.to_bytes(4, "little").hex()))
                    if self.progress is not None:
                        self.progress.advance(frame.data_bytes)
                for name in job.closes:
                    self.objects.close(name)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self.failure.append(exc)
            self.failed.set()
            self.objects.abort()
            # The reader sees `failed` within its put timeout: nothing waits on us now.

    def finish(self) -> None:
        self._put(None)
        self.writer.join()
        self.pool.shutdown()
        if self.failure:
            raise self.failure[0]

    def abandon(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.writer.is_alive():
            with contextlib.suppress(BaseException):
                self._put(None)
            self.writer.join()
        self.objects.abort()


def _cut(source: BinaryIO, member: TarMember, entry: _Entry, placement: Placement,
         where: str) -> Iterator[_FrameJob]:
    """Read the member's data from the stream frame by frame, hashing it as it passes."""
    for cut in placement.cuts:
        header = len(member.header) if cut.with_header else 0
        padding = member.padding if cut.with_padding else 0
        raw = bytearray(header + cut.data_length + padding)
        if header:
            raw[:header] = member.header
        view = memoryview(raw)
        read_exact(source, view[header:], f"{where} ({member.name})")
        data = view[header:header + cut.data_length]
        # Twice, and cheap (hardware CRC32C): the file's, and this frame's for delta restores.
        entry.crc = crc32c.crc32c(data, entry.crc)
        frame_crc = entry.crc if len(placement.cuts) == 1 else crc32c.crc32c(data)
        yield _FrameJob(raw, placement.object, placement.kind, cut.raw_offset, entry,
                        cut.data_length, frame_crc)


def write_bundles(source: BinaryIO, repo: Repository, prefix: str, settings: TransferSettings,
                  level: int, published: list[str], progress: Progress | None = None,
                  where: str = "pg_basebackup") -> WrittenBundles:
    """Read a whole tar stream from `source` into objects under `prefix`.

    Committed object keys are appended to `published` as they land, so the
    caller can delete them if anything fails later; objects still open when
    this fails are aborted here.
    """
    end_frame = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                         write_checksum=True).compress(END_OF_ARCHIVE)
    objects = ObjectSink(repo, prefix, published, end_frame)
    planner = BundlePlanner(settings.frame_size, settings.bundle_size)
    pipeline = _Pipeline(objects, settings, level, progress)
    entries: list[_Entry] = []
    pg_manifest: bytes | None = None
    raw_bytes = 0
    try:
        job = _Job()
        while (member := next_member(source, where)) is not None:
            if member.name == PG_MANIFEST and member.type == "file":
                data = bytearray(member.size + member.padding)
                read_exact(source, memoryview(data), f"{where} ({member.name})")
                pg_manifest = bytes(data[:member.size])
                continue
            entry = _Entry(member)
            entries.append(entry)
            placement = planner.place(len(member.header), member.size)
            for frame in _cut(source, member, entry, placement, where):
                job.frames.append(frame)
                job.raw_bytes += len(frame.raw)
                raw_bytes += len(frame.raw)
                if job.raw_bytes >= JOB_BYTES:
                    pipeline.submit(job)
                    job = _Job()
            # An object closes after its last frame: with this job, or the next one.
            job.closes.extend(placement.closes)
        job.closes.extend(planner.finish())
        if job.frames or job.closes:
            pipeline.submit(job)
        if source.read(1):
            raise TarFormatError(f"{where}: bytes after the end of the tar archive",
                                 "the stream is not one tar archive from pg_basebackup")
        pipeline.finish()
        records = objects.records()
    except BaseException:
        pipeline.abandon()
        raise
    if pg_manifest is None:
        raise TarFormatError(f"{where}: the stream held no backup_manifest",
                             "use pg_basebackup 13 or newer")
    index = FileIndex(entries=tuple(e.freeze() for e in entries),
                      objects=tuple(sorted(records, key=lambda o: o.name)),
                      frame_size=settings.frame_size,
                      bundle_size=settings.bundle_size)
    return WrittenBundles(index, pg_manifest, raw_bytes)

