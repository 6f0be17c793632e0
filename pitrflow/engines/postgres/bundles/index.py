"""The file index of a v2 backup: where every data-directory file's bytes are stored.

For each tar member (file, directory or symlink) it keeps what a restore
needs to recreate it (path, type, size, mode, mtime, link target), its
CRC32C in the form PostgreSQL's backup_manifest uses (so the two can be
compared, and a delta restore can compare local files without fetching),
and its frames: the object holding each frame, the frame's offset and
stored length in that object, the offset and length of its decompressed
bytes in the object's tar stream, the SHA-256 of the stored frame, and the
CRC32C of the file data it holds (a delta restore re-fetches only the
frames of a large file that differ).

The index is stored as one zstd-compressed JSON object beside the bundles;
its SHA-256 is in the backup's manifest, which stays the truth of a backup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import zstandard

from pitrflow.errors import RepositoryError

INDEX_NAME = "index.json.zst"
INDEX_VERSION = 1
CHECKSUM_ALGORITHM = "CRC32C"


@dataclass(frozen=True)
class Frame:
    object: str
    offset: int  # in the stored object
    length: int  # stored (compressed) bytes
    raw_offset: int  # in the object's decompressed tar stream
    raw_length: int
    sha256: str  # of the stored bytes
    crc32c: str = ""  # of the file data in this frame, as `IndexEntry.checksum`


@dataclass(frozen=True)
class IndexEntry:
    path: str
    type: str  # "file" | "dir" | "symlink"
    size: int
    mode: int
    mtime: int
    link: str = ""
    checksum: str = ""  # CRC32C as backup_manifest writes it (little-endian hex); files only
    header_len: int = 512
    frames: tuple[Frame, ...] = ()

    @property
    def data_start(self) -> int:
        """Where the file's data begins in its first frame's decompressed tar stream."""
        return self.frames[0].raw_offset + self.header_len if self.frames else 0

    def data_range(self, frame: Frame) -> tuple[int, int, int]:
        """(start, end) of this file's data inside `frame`'s raw bytes, and its file offset."""
        start = self.data_start
        low = max(frame.raw_offset, start)
        high = min(frame.raw_offset + frame.raw_length, start + self.size)
        if high <= low:
            return 0, 0, 0
        return low - frame.raw_offset, high - frame.raw_offset, low - start

    @property
    def objects(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.object for f in self.frames))


@dataclass(frozen=True)
class ObjectRecord:
    name: str
    size: int
    sha256: str
    raw_size: int  # of the decompressed tar stream, end-of-archive blocks included
    kind: str  # "bundle" (many small files) | "file" (one large file)


@dataclass(frozen=True)
class FileIndex:
    entries: tuple[IndexEntry, ...]
    objects: tuple[ObjectRecord, ...]
    frame_size: int
    bundle_size: int
    version: int = INDEX_VERSION
    by_path: dict[str, IndexEntry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_path.update((e.path, e) for e in self.entries)

    def entry(self, path: str) -> IndexEntry | None:
        return self.by_path.get(path)

    def object(self, name: str) -> ObjectRecord | None:
        return next((o for o in self.objects if o.name == name), None)

    @property
    def data_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def _entry_doc(entry: IndexEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"path": entry.path, "type": entry.type, "size": entry.size,
                           "mode": entry.mode, "mtime": entry.mtime}
    if entry.link:
        doc["link"] = entry.link
    if entry.type == "file":
        doc["checksum_algorithm"] = CHECKSUM_ALGORITHM
        doc["checksum"] = entry.checksum
    doc["header_len"] = entry.header_len
    doc["frames"] = [[f.object, f.offset, f.length, f.raw_offset, f.raw_length, f.sha256,
                      f.crc32c] for f in entry.frames]
    return doc


def index_to_json(index: FileIndex) -> bytes:
    doc = {
        "format": "pitrflow-file-index", "version": index.version,
        "frame_size": index.frame_size, "bundle_size": index.bundle_size,
        "frame_fields": ["object", "offset", "length", "raw_offset", "raw_length", "sha256",
                         "crc32c"],
        "objects": [{"name": o.name, "size": o.size, "sha256": o.sha256, "raw_size": o.raw_size,
                     "kind": o.kind} for o in index.objects],
        "entries": [_entry_doc(e) for e in index.entries],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def dump_index(index: FileIndex) -> bytes:
    """The stored form: JSON in one zstd frame."""
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(index_to_json(index))


def _entry(doc: dict[str, Any]) -> IndexEntry:
    path = str(doc["path"])
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or "" in parts or "." in parts:
        raise ValueError(f"entry path {path!r} points outside the data directory")
    return IndexEntry(
        path=path, type=str(doc["type"]), size=int(doc["size"]),
        mode=int(doc["mode"]), mtime=int(doc["mtime"]), link=str(doc.get("link", "")),
        checksum=str(doc.get("checksum", "")), header_len=int(doc["header_len"]),
        frames=tuple(Frame(str(o), int(a), int(n), int(ra), int(rn), str(s), str(c))
                     for o, a, n, ra, rn, s, c in doc["frames"]),
    )


def load_index(data: bytes, key: str) -> FileIndex:
    try:
        doc = json.loads(zstandard.ZstdDecompressor().decompress(data))
        if doc.get("format") != "pitrflow-file-index":
            raise ValueError("not a pitrflow file index")
        if doc.get("version") != INDEX_VERSION:
            raise RepositoryError(f"file index {key} is version {doc.get('version')}",
                                  "was it written by a newer pitrflow?")
        return FileIndex(
            entries=tuple(_entry(e) for e in doc["entries"]),
            objects=tuple(ObjectRecord(str(o["name"]), int(o["size"]), str(o["sha256"]),
                                       int(o["raw_size"]), str(o["kind"]))
                          for o in doc["objects"]),
            frame_size=int(doc["frame_size"]), bundle_size=int(doc["bundle_size"]),
        )
    except RepositoryError:
        raise
    except (zstandard.ZstdError, ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(f"file index {key} cannot be read: {exc}",
                              "the repository copy is damaged; run pitr verify") from None
