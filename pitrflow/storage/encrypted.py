"""An encrypting repository: any driver (fs, s3) wrapped so every object is sealed.

Chosen by storage.open when [repository.encryption] is configured.  Callers above
the storage layer see plaintext only: put_* return the plaintext size and SHA-256
(what a HashingReader over open_reader computes), list() reports plaintext sizes
(the ciphertext size is a pure function of them, crypto_format), and read_range
takes plaintext offsets, maps them to the covering 64 KiB chunks and makes one
ranged read of the inner driver (plus, once per object, its 56-byte header), so
parallel ranged restores stay possible.  Compression is the callers' business and
happens before; what they give is what gets encrypted.

The wrapper declares local_staging and local_paths False: nothing may bypass it by
renaming plaintext files into the repository or reading them in place.  A wrong
or missing master key fails before the first byte is written (storage.keys).

Unencrypted objects are read only if the repository's legacy record, sealed when
encryption was turned on, lists them with the same size and modification time
(storage.keys); any other plaintext object is refused, naming it.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from pitrflow.errors import ObjectAuthError, ObjectNotFoundError, RepositoryError
from pitrflow.storage import crypto_format as fmt
from pitrflow.storage.base import (
    CHUNK,
    ObjectInfo,
    Repository,
    StorageFeatures,
    whole_range,
)
from pitrflow.storage.keys import KeyStore, RekeyResult, reserved
from pitrflow.storage.locking import LockStatus
from pitrflow.storage.masters import KEYS_PREFIX, MasterSource
from pitrflow.storage.uploads import PendingUpload

_CACHE = 4096
_UNKNOWN = object()


def _seconds(when: datetime | None) -> int:
    return int(when.timestamp()) if when is not None else 0


def _refuse_reserved(key: str) -> str:
    # The drivers' own rules, checked here too so a bad key fails before any key is made.
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise RepositoryError(f"invalid object key {key!r}", "keys are relative paths")
    if reserved(key):
        raise RepositoryError(f"object key {key} is reserved for the repository's keys",
                              f"nothing but pitrflow's key store writes under {KEYS_PREFIX}")
    return key


class EncryptedRepository:
    def __init__(self, inner: Repository, source: MasterSource) -> None:
        self.inner = inner
        # Ranged, parallel restores read through the wrapper at the inner driver's pace.
        self.transfer = inner.transfer
        locking = inner.features.object_lock
        self.keys = KeyStore(inner, source,
                             extend_lock=cast(Any, inner).extend_lock if locking else None)
        self.features = StorageFeatures(
            local_staging=False, local_paths=False,
            multipart_uploads=inner.features.multipart_uploads, object_lock=locking,
            encrypted=True)
        # key -> ObjectCipher of its stored version, or None for an accepted plaintext object.
        self._ciphers: OrderedDict[str, fmt.ObjectCipher | None] = OrderedDict()
        self._cache_lock = threading.Lock()  # restores read many objects in parallel

    def describe(self) -> str:
        return self.inner.describe()

    # --- writing ---

    def _cipher_for_write(self, key: str) -> fmt.ObjectCipher:
        _refuse_reserved(key)
        # Keys first: a wrong or missing master key must fail before anything is written.
        epoch, data_key = self.keys.writing_epoch()
        self._forget(key)
        return fmt.ObjectCipher(data_key, fmt.new_header(epoch), key)

    def open_writer(self, key: str) -> EncryptingWriter:
        cipher = self._cipher_for_write(key)
        return EncryptingWriter(self.inner.open_writer(key), cipher)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        sealer = fmt.ChunkSealer(self._cipher_for_write(key))
        self.inner.put_bytes(key, b"".join(sealer.update(data) + sealer.finish()))
        return ObjectInfo(key, len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, src: Path, move: bool = False) -> ObjectInfo:
        with open(src, "rb") as handle, self.open_writer(key) as writer:
            while chunk := handle.read(CHUNK):
                writer.write(chunk)
            info = writer.commit()
        if move:
            src.unlink()
        return info

    # --- reading ---

    def _cipher_of(self, key: str, head: bytes) -> fmt.ObjectCipher | None:
        """The cipher for a stored object starting with `head`; None if it is accepted plaintext."""
        known = self._ciphers.get(key, _UNKNOWN)
        if fmt.is_encrypted(head):
            header = fmt.parse_header(head, key)
            if isinstance(known, fmt.ObjectCipher) and known.header == header:
                cipher: fmt.ObjectCipher | None = known
            else:
                cipher = fmt.ObjectCipher(self.keys.data_key(header.epoch_id, key), header, key)
        else:
            if known is not None:  # not yet checked against the legacy record
                self._check_legacy(key)
            cipher = None
        with self._cache_lock:
            self._ciphers[key] = cipher
            self._ciphers.move_to_end(key)
            while len(self._ciphers) > _CACHE:
                self._ciphers.popitem(last=False)
        return cipher

    def _check_legacy(self, key: str) -> None:
        record = self.keys.legacy().get(key) if self.keys.has_legacy() else None
        listed = next((i for i in self.inner.list(key) if i.key == key), None)
        if listed is None:
            raise ObjectNotFoundError(f"object {key} is missing from repository "
                                      f"{self.describe()}", "run pitr verify")
        if record is None or record != (listed.size, _seconds(listed.modified)):
            raise ObjectAuthError(
                f"object {key} is not encrypted, but the repository is, and it is not one of "
                "the objects that were there when encryption was turned on",
                "something without [repository.encryption] wrote or replaced it: configure "
                "encryption on every worker, and restore from another backup")

    def get_bytes(self, key: str) -> bytes:
        stored = self.inner.get_bytes(_refuse_reserved(key))
        cipher = self._cipher_of(key, stored[:fmt.HEADER_SIZE])
        if cipher is None:
            return stored
        return _open_all(cipher, stored)

    def open_reader(self, key: str) -> BinaryIO:
        raw = self.inner.open_reader(_refuse_reserved(key))
        try:
            head = _read_exactly(raw, fmt.HEADER_SIZE)
            cipher = self._cipher_of(key, head)
        except BaseException:
            raw.close()
            raise
        if cipher is None:
            return cast(BinaryIO, _Prefixed(head, raw))
        return cast(BinaryIO, DecryptingReader(raw, fmt.ChunkOpener(cipher)))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return whole_range(key, offset, length, self.read_upto(key, offset, length))

    def read_upto(self, key: str, offset: int, length: int) -> bytes:
        """Plaintext bytes [offset, offset + length), fewer where the object ends."""
        if length <= 0:
            return b""
        _refuse_reserved(key)
        first, last = fmt.chunk_span(offset, length)
        cached = self._ciphers.get(key, _UNKNOWN)
        try:
            return self._read_chunks(key, offset, length, first, last, cached)
        except ObjectAuthError:
            if cached is _UNKNOWN:
                raise
            # The object may have been replaced since its header was cached: read it afresh.
            self._forget(key)
            return self._read_chunks(key, offset, length, first, last, _UNKNOWN)

    def _read_chunks(self, key: str, offset: int, length: int, first: int, last: int,
                     cached: object) -> bytes:
        sealed: bytes | None = None
        if cached is _UNKNOWN:
            if first == 0:  # header and chunks in one read
                data = self.inner.read_upto(key, 0, fmt.chunk_offset(last + 1))
                cipher = self._cipher_of(key, data[:fmt.HEADER_SIZE])
                if cipher is None:
                    return data[offset:offset + length]
                sealed = data[fmt.HEADER_SIZE:]
            else:
                cipher = self._cipher_of(key, self.inner.read_upto(key, 0, fmt.HEADER_SIZE))
        else:
            cipher = cast(fmt.ObjectCipher | None, cached)
        if cipher is None:
            return self.inner.read_upto(key, offset, length)
        if sealed is None:
            sealed = self.inner.read_upto(key, fmt.chunk_offset(first),
                                          (last - first + 1) * fmt.SEALED_CHUNK)
        if not sealed:
            return b""
        plain = fmt.open_chunks(cipher, first, sealed)
        start = offset - first * fmt.CHUNK_SIZE
        return plain[start:start + length]

    def exists(self, key: str) -> bool:
        return self.inner.exists(_refuse_reserved(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under `prefix` with their plaintext sizes; the key store is not listed."""
        legacy = self.keys.legacy() if self.keys.has_legacy() else {}
        for info in self.inner.list(prefix):
            if reserved(info.key):
                continue
            if legacy.get(info.key) == (info.size, _seconds(info.modified)):
                yield info
            else:
                yield ObjectInfo(info.key, fmt.listed_size(info.size), modified=info.modified)

    def _forget(self, key: str) -> None:
        with self._cache_lock:
            self._ciphers.pop(key, None)

    def delete(self, key: str) -> None:
        self._forget(key)
        self.inner.delete(_refuse_reserved(key))

    # --- scratch, checks ---

    def staging_dir(self) -> Path:
        """Local scratch only: nothing staged is ever renamed into the repository."""
        return Path(tempfile.mkdtemp(prefix="pitrflow-staging-"))

    def discard_staging(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def check_writable(self) -> None:
        self.inner.check_writable()
        self.keys.writing_epoch()

    # --- keys ---

    def start_new_epoch(self) -> str:
        return self.keys.new_epoch()

    def writing_epoch(self) -> str:
        return self.keys.writing_epoch()[0]

    def rekey(self, new: MasterSource) -> RekeyResult:
        return self.keys.rekey(new)

    def encryption_summary(self) -> str:
        """One line for pitr check; EncryptionKeyError when the master key does not open."""
        epochs = self.keys.epochs()
        if not epochs:
            return (f"no data key yet (the first write makes one), master key from "
                    f"{self.keys.source.describe}")
        self.keys.data_key(epochs[-1])
        return (f"{fmt.CIPHER}, {len(epochs)} data key(s), newest {epochs[-1]}, opened with "
                f"{self.keys.source.describe}")

    # --- what the inner driver offers (uploads, Object Lock) ---

    def list_uploads(self, prefix: str) -> Iterator[PendingUpload]:
        return cast(Any, self.inner).list_uploads(prefix)  # type: ignore[no-any-return]

    def abort_upload(self, upload: PendingUpload) -> None:
        cast(Any, self.inner).abort_upload(upload)

    def retained_until(self, key: str) -> datetime | None:
        return cast(Any, self.inner).retained_until(key)  # type: ignore[no-any-return]

    def extend_lock(self, key: str) -> None:
        cast(Any, self.inner).extend_lock(key)

    def lock_status(self) -> LockStatus:
        return cast(Any, self.inner).lock_status()  # type: ignore[no-any-return]


def _open_all(cipher: fmt.ObjectCipher, stored: bytes) -> bytes:
    opener = fmt.ChunkOpener(cipher)
    return b"".join([*opener.update(memoryview(stored)[fmt.HEADER_SIZE:]), opener.finish()])


def _read_exactly(raw: BinaryIO, n: int) -> bytes:
    parts = []
    while n > 0:
        data = raw.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


class EncryptingWriter:
    """Seals bytes as they come and hands them to the inner writer; atomic as it is."""

    def __init__(self, inner: Any, cipher: fmt.ObjectCipher) -> None:
        self._inner = inner
        self._sealer = fmt.ChunkSealer(cipher)
        self._key = cipher.name
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self._size += len(data)
        for piece in self._sealer.update(data):
            self._inner.write(piece)
        return len(data)

    def commit(self) -> ObjectInfo:
        try:
            for piece in self._sealer.finish():
                self._inner.write(piece)
        except BaseException:
            self._inner.abort()
            raise
        self._inner.commit()
        return ObjectInfo(self._key, self._size, self._digest.hexdigest())

    def abort(self) -> None:
        self._inner.abort()

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


class DecryptingReader(io.RawIOBase):
    """Plaintext of a stored object, opened chunk by chunk as the inner stream is read.

    Opened chunks wait in a queue and a read joins just what it returns: one copy of
    the plaintext on the way out.
    """

    def __init__(self, raw: BinaryIO, opener: fmt.ChunkOpener) -> None:
        super().__init__()
        self._raw = raw
        self._opener = opener
        self._ready: deque[bytes] = deque()
        self._buffered = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        data = self._raw.read(CHUNK)
        pieces = self._opener.update(data) if data else [self._opener.finish()]
        self._done = not data
        self._ready.extend(pieces)
        self._buffered += sum(len(p) for p in pieces)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self._done:
                self._fill()
            size = self._buffered
        while self._buffered < size and not self._done:
            self._fill()
        out: list[bytes] = []
        wanted = min(size, self._buffered)
        while wanted > 0:
            piece = self._ready.popleft()
            if len(piece) > wanted:
                self._ready.appendleft(piece[wanted:])
                piece = piece[:wanted]
            out.append(piece)
            wanted -= len(piece)
            self._buffered -= len(piece)
        return out[0] if len(out) == 1 else b"".join(out)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _Prefixed(io.RawIOBase):
    """A plaintext object whose first bytes were already read to look for a header."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data, self._head = self._head + self._raw.read(), b""
            return data
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
