"""The objects a backup is writing, each committed in the background once complete.

Frames are appended on the writer thread, in stream order, to the open
bundle or large file's object.  A complete object is handed to one of two
committer threads (a commit is an fsync and a rename on a filesystem, the
last part and a CompleteMultipartUpload, or a whole PutObject, on S3), so the
writer carries on with the next object meanwhile; at most a few commits wait
at once, which bounds the memory a store's writers may buffer.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from pitrflow.engines.postgres.bundles.index import ObjectRecord
from pitrflow.engines.postgres.bundles.tarparse import END_OF_ARCHIVE
from pitrflow.storage.base import AtomicWriter, Repository

COMMITTERS = 2


class ObjectSink:
    def __init__(self, repo: Repository, prefix: str, published: list[str],
                 end_frame: bytes) -> None:
        self._repo = repo
        self._prefix = prefix
        self._published = published
        self._end_frame = end_frame
        self._open: dict[str, tuple[AtomicWriter, str, list[int]]] = {}  # writer, kind, sizes
        self._commits = ThreadPoolExecutor(max_workers=COMMITTERS,
                                           thread_name_prefix="pitr-commit")
        self._slots = threading.BoundedSemaphore(COMMITTERS + 1)
        self._pending: list[Future[ObjectRecord]] = []

    def append(self, name: str, kind: str, data: bytes, raw_length: int) -> int:
        """Write one compressed frame to `name`; returns its offset in the object."""
        if name not in self._open:
            self._open[name] = (self._repo.open_writer(self._prefix + name), kind, [0, 0])
        writer, _, position = self._open[name]
        offset = position[0]
        writer.write(data)
        position[0] += len(data)
        position[1] += raw_length
        return offset

    def close(self, name: str) -> None:
        """End `name` with the end-of-archive frame and commit it in the background."""
        writer, kind, position = self._open.pop(name)
        try:
            writer.write(self._end_frame)
            self._raise_failed()
        except BaseException:
            with contextlib.suppress(Exception):
                writer.abort()
            raise
        self._slots.acquire()
        # Listed before it lands, so a failure anywhere removes it (a missing key is no harm).
        self._published.append(self._prefix + name)
        self._pending.append(self._commits.submit(
            self._commit, writer, name, kind, position[1] + len(END_OF_ARCHIVE)))

    def _commit(self, writer: AtomicWriter, name: str, kind: str, raw_size: int
                ) -> ObjectRecord:
        try:
            info = writer.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                writer.abort()
            raise
        finally:
            self._slots.release()
        assert info.sha256 is not None
        return ObjectRecord(name, info.size, info.sha256, raw_size, kind)

    def _raise_failed(self) -> None:
        for future in self._pending:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def records(self) -> list[ObjectRecord]:
        """Wait for every commit; the objects in the order they were completed."""
        try:
            return [future.result() for future in self._pending]
        finally:
            self._commits.shutdown()

    def abort(self) -> None:
        """Abort the objects still open; let started commits end (the caller deletes them)."""
        for writer, _, _ in self._open.values():
            with contextlib.suppress(Exception):
                writer.abort()
        self._open.clear()
        for future in self._pending:
            with contextlib.suppress(BaseException):
                future.result()
        self._commits.shutdown()
