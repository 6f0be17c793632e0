"""The encrypted object format: a small header, then fixed-size AES-256-GCM chunks.

    header (56 bytes)  magic(8) version(1) reserved(3) chunk_size(4) epoch(8) salt(32)
    chunk i            AES-256-GCM(plaintext[i*C:(i+1)*C]) followed by its 16-byte tag

Every object gets its own key, HKDF-SHA256(data key of its epoch, salt, info = its
name), so a chunk's nonce can be its index: no two chunks anywhere share a
(key, nonce).  Each chunk's associated data binds the SHA-256 of (header, name), the
chunk index and a last-chunk flag.  So the bytes of another object put under this
name, chunks reordered, dropped or appended, a truncated object, or an edited header
all fail authentication; a reader says which object and which chunk.

The chunk size is fixed for format version 1 (64 KiB: small enough that a ranged
read fetches little beyond what it asked for, large enough that the 16-byte tags
cost 0.02 % and AES-GCM runs at memory speed), so the ciphertext size is a pure
function of the plaintext size and a listing can report plaintext sizes without
reading a byte.  An empty object still has one (empty) chunk, so a header alone
is never a valid object.

Pure: no I/O; the repository wrapper (storage.encrypted) does the reading and writing.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pitrflow.errors import ObjectAuthError

CIPHER = "AES-256-GCM"
MAGIC = b"\x89PFE\r\n\x1a\n"
VERSION = 1
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
SALT_SIZE = 32
EPOCH_SIZE = 8
KEY_SIZE = 32
_HEADER = struct.Struct(f">8sB3sI{EPOCH_SIZE}s{SALT_SIZE}s")
HEADER_SIZE = _HEADER.size  # 56
SEALED_CHUNK = CHUNK_SIZE + TAG_SIZE
_HINT = ("the repository copy was altered or damaged: restore from another backup, run "
         "pitr verify, and find out who can write to the repository")


@dataclass(frozen=True)
class Header:
    epoch: bytes
    salt: bytes
    chunk_size: int = CHUNK_SIZE

    @property
    def epoch_id(self) -> str:
        return self.epoch.hex()

    def encode(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, b"\0\0\0", self.chunk_size, self.epoch, self.salt)


def new_header(epoch_id: str) -> Header:
    return Header(bytes.fromhex(epoch_id), os.urandom(SALT_SIZE))


def is_encrypted(head: bytes) -> bool:
    """Whether the first bytes of an object carry the format's magic."""
    return head[: len(MAGIC)] == MAGIC


def parse_header(data: bytes, name: str) -> Header:
    if len(data) < HEADER_SIZE:
        raise ObjectAuthError(f"object {name} is shorter than an encryption header "
                              f"({len(data)} bytes)", _HINT)
    magic, version, reserved, chunk_size, epoch, salt = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ObjectAuthError(f"object {name} is not an encrypted object", _HINT)
    if version != VERSION or reserved != b"\0\0\0" or chunk_size != CHUNK_SIZE:
        raise ObjectAuthError(
            f"object {name} has an encryption header this version cannot read (format "
            f"{version}, chunk size {chunk_size})",
            "if it was written by a newer pitrflow, upgrade; otherwise " + _HINT)
    return Header(epoch, salt, chunk_size)


def ciphertext_size(plain: int) -> int:
    chunks = max(1, -(-plain // CHUNK_SIZE))
    return HEADER_SIZE + plain + TAG_SIZE * chunks


def plaintext_size(stored: int) -> int | None:
    """The plaintext size of an encrypted object of `stored` bytes; None if no size fits."""
    body = stored - HEADER_SIZE
    if body < TAG_SIZE:
        return None
    chunks = -(-body // SEALED_CHUNK)
    last = body - (chunks - 1) * SEALED_CHUNK
    if last < TAG_SIZE or (chunks > 1 and last == TAG_SIZE):
        return None
    return body - TAG_SIZE * chunks


def listed_size(stored: int) -> int:
    """The size a listing reports: plaintext, or for a damaged object a size no manifest has."""
    size = plaintext_size(stored)
    return size if size is not None else -stored


def chunk_span(offset: int, length: int) -> tuple[int, int]:
    """First and last chunk index holding plaintext bytes [offset, offset + length)."""
    return offset // CHUNK_SIZE, (offset + length - 1) // CHUNK_SIZE


def chunk_offset(index: int) -> int:
    """Where sealed chunk `index` starts in the stored object."""
    return HEADER_SIZE + index * SEALED_CHUNK


class ObjectCipher:
    """Seals and opens the chunks of one object (one header, one name)."""

    def __init__(self, data_key: bytes, header: Header, name: str) -> None:
        self.header = header
        self.name = name
        self._encoded = header.encode()
        object_key = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=header.salt,
                          info=b"pitrflow object v1\0" + name.encode()).derive(data_key)
        self._aead = AESGCM(object_key)
        self._bound = hashlib.sha256(self._encoded + b"\0" + name.encode()).digest()

    @property
    def encoded_header(self) -> bytes:
        return self._encoded

    def _aad(self, index: int, last: bool) -> bytes:
        return self._bound + struct.pack(">QB", index, 1 if last else 0)

    @staticmethod
    def _nonce(index: int) -> bytes:
        return struct.pack(">IQ", 0, index)

    def seal(self, index: int, plain: bytes | memoryview, last: bool) -> bytes:
        return self._aead.encrypt(self._nonce(index), plain, self._aad(index, last))

    def open(self, index: int, sealed: bytes | memoryview, last: bool) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(index), sealed, self._aad(index, last))
        except InvalidTag:
            raise self.failure(index) from None

    def open_unknown_last(self, index: int, sealed: bytes | memoryview) -> bytes:
        """A full-size chunk that may or may not be the object's last one."""
        try:
            return self._aead.decrypt(self._nonce(index), sealed, self._aad(index, False))
        except InvalidTag:
            return self.open(index, sealed, True)

    def failure(self, index: int) -> ObjectAuthError:
        return ObjectAuthError(
            f"object {self.name} fails authentication at chunk {index} (data key "
            f"{self.header.epoch_id}): it was altered, truncated, or holds another object's "
            "bytes", _HINT)


class ChunkSealer:
    """Streaming encryption: bytes in, sealed pieces out (the header first).

    A full chunk is held back until more data follows it, since only then is it known
    not to be the last.  Pieces are returned as a list, not joined: every copy of a
    multi-GB backup stream costs time.
    """

    def __init__(self, cipher: ObjectCipher) -> None:
        self._cipher = cipher
        self._pending = bytearray()
        self._index = 0
        self._started = False

    def _head(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [self._cipher.encoded_header]

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        out = self._head()
        view = memoryview(data).cast("B")
        if self._pending:
            take = min(len(view), CHUNK_SIZE - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if not view:
                return out
            out.append(self._cipher.seal(self._index, bytes(self._pending), False))
            self._index += 1
            self._pending.clear()
        start = 0
        while len(view) - start > CHUNK_SIZE:
            out.append(self._cipher.seal(self._index, view[start:start + CHUNK_SIZE], False))
            self._index += 1
            start += CHUNK_SIZE
        self._pending += view[start:]
        return out

    def finish(self) -> list[bytes]:
        out = self._head()
        out.append(self._cipher.seal(self._index, bytes(self._pending), True))
        self._pending.clear()
        return out


class ChunkOpener:
    """Streaming decryption of the bytes after the header; a chunk is opened once it is
    known whether another follows it.  Plaintext comes out as a list of chunks."""

    def __init__(self, cipher: ObjectCipher) -> None:
        self._cipher = cipher
        self._pending = bytearray()
        self._index = 0

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        out: list[bytes] = []
        view = memoryview(data).cast("B")
        if self._pending:
            take = min(len(view), SEALED_CHUNK - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if not view:
                return out
            out.append(self._cipher.open(self._index, bytes(self._pending), False))
            self._index += 1
            self._pending.clear()
        start = 0
        while len(view) - start > SEALED_CHUNK:
            out.append(self._cipher.open(self._index, view[start:start + SEALED_CHUNK], False))
            self._index += 1
            start += SEALED_CHUNK
        self._pending += view[start:]
        return out

    def finish(self) -> bytes:
        if len(self._pending) < TAG_SIZE or (self._index > 0 and len(self._pending) == TAG_SIZE):
            raise self._cipher.failure(self._index)
        plain = self._cipher.open(self._index, bytes(self._pending), True)
        self._pending.clear()
        return plain


def open_chunks(cipher: ObjectCipher, first: int, sealed: bytes) -> bytes:
    """Plaintext of consecutive sealed chunks from index `first`, as one ranged read gave them.

    A short final piece is the object's last chunk; a full-size final piece may be, and
    is tried both ways.  Fewer than a tag's worth of bytes is a damaged object.
    """
    out = []
    view = memoryview(sealed)
    index, start = first, 0
    while start < len(sealed):
        piece = view[start:start + SEALED_CHUNK]
        if len(piece) < SEALED_CHUNK:
            if len(piece) < TAG_SIZE or (index > 0 and len(piece) == TAG_SIZE):
                raise cipher.failure(index)
            out.append(cipher.open(index, piece, True))
        elif start + SEALED_CHUNK < len(sealed):
            out.append(cipher.open(index, piece, False))
        else:
            out.append(cipher.open_unknown_last(index, piece))
        index += 1
        start += SEALED_CHUNK
    return b"".join(out)


def seal_bytes(data_key: bytes, epoch_id: str, name: str, data: bytes) -> bytes:
    """A whole object at once (small objects: manifests, marks, key records)."""
    sealer = ChunkSealer(ObjectCipher(data_key, new_header(epoch_id), name))
    return b"".join(sealer.update(data) + sealer.finish())


def open_bytes(data_key: bytes, name: str, stored: bytes, header: Header | None = None) -> bytes:
    """The plaintext of a whole stored object; `header` if already parsed."""
    header = header or parse_header(stored, name)
    opener = ChunkOpener(ObjectCipher(data_key, header, name))
    return b"".join([*opener.update(memoryview(stored)[HEADER_SIZE:]), opener.finish()])
