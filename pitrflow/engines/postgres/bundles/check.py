"""`pitr verify` for v2 objects: every byte read once, every frame decompressed.

Each object is streamed from the repository (one frame in memory at a time)
and checked against its SHA-256; on the way every indexed frame is checked
against its own SHA-256, decompressed to its recorded length, and every
file's CRC32C recomputed from the decompressed bytes; the object's final
frame must be the tar end-of-archive blocks.  A problem names the object
and, where it lies in a frame, the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import crc32c
import zstandard

from pitrflow.engines.postgres.bundles.index import FileIndex, Frame, IndexEntry
from pitrflow.engines.postgres.bundles.tarparse import END_OF_ARCHIVE
from pitrflow.errors import PitrError
from pitrflow.storage.base import HashingReader, Repository


@dataclass
class ObjectCheck:
    key: str
    problems: list[str]
    bytes_read: int = 0


def _frames_by_object(index: FileIndex) -> dict[str, list[tuple[IndexEntry, Frame]]]:
    found: dict[str, list[tuple[IndexEntry, Frame]]] = {}
    for entry in index.entries:
        for frame in entry.frames:
            found.setdefault(frame.object, []).append((entry, frame))
    for frames in found.values():
        frames.sort(key=lambda item: item[1].offset)
    return found


def check_objects(repo: Repository, prefix: str, index: FileIndex) -> list[ObjectCheck]:
    frames = _frames_by_object(index)
    return [_check_one(repo, prefix + record.name, record.size, record.sha256,
                       frames.get(record.name, [])) for record in index.objects]


def _check_one(repo: Repository, key: str, size: int, sha256: str,
               frames: list[tuple[IndexEntry, Frame]]) -> ObjectCheck:
    result = ObjectCheck(key, [])
    crcs: dict[str, int] = {}
    dctx = zstandard.ZstdDecompressor()
    try:
        reader = HashingReader(repo.open_reader(key), key)
        try:
            position = 0
            for entry, frame in frames:
                if frame.offset != position:
                    result.problems.append(f"object {key} has unindexed bytes at {position}")
                    break
                stored = _read(reader, frame.length)
                position += len(stored)
                problem = _check_frame(key, dctx, entry, frame, stored, crcs)
                if problem:
                    result.problems.append(problem)
            tail = reader.read()
            try:
                if dctx.decompress(tail) != END_OF_ARCHIVE:
                    result.problems.append(f"object {key} does not end with a tar end-of-archive")
            except zstandard.ZstdError as exc:
                result.problems.append(f"object {key} final frame does not decompress: {exc}")
        finally:
            reader.close()
        result.bytes_read = reader.size
        reader.verify(sha256, size)
    except PitrError as exc:
        result.problems.append(exc.message)
    for entry, _ in frames:
        if entry.path in crcs and entry.frames[-1].object == key and not result.problems:
            found = crcs.pop(entry.path).to_bytes(4, "little").hex()
            if found != entry.checksum:
                result.problems.append(f"file {entry.path} in object {key} has CRC32C {found}, "
                                       f"its index says {entry.checksum}")
    return result


def _read(reader: HashingReader, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = reader.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _check_frame(key: str, dctx: zstandard.ZstdDecompressor, entry: IndexEntry, frame: Frame,
                 stored: bytes, crcs: dict[str, int]) -> str | None:
    where = f"object {key} frame at byte {frame.offset} (file {entry.path})"
    if hashlib.sha256(stored).hexdigest() != frame.sha256:
        return f"{where} does not match its recorded sha256"
    try:
        raw = dctx.decompress(stored)
    except zstandard.ZstdError as exc:
        return f"{where} does not decompress: {exc}"
    if len(raw) != frame.raw_length:
        return f"{where} holds {len(raw)} bytes, its index says {frame.raw_length}"
    start, end, _ = entry.data_range(frame)
    if entry.type == "file":
        crcs[entry.path] = crc32c.crc32c(memoryview(raw)[start:end], crcs.get(entry.path, 0))
    return None
