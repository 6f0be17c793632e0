"""PostgreSQL backup manifests and ship marks, sealed as pitrflow records.

A manifest is written last, after every object it lists, so its presence is
what makes a backup real.  It carries a SHA-256 over its own canonical JSON:
a reader rejects a manifest that was truncated or edited by hand.

Two layouts exist.  Format 1, layout "stream": the backup is one or two zstd
tar streams (base.tar.zst, pg_wal.tar.zst) and PostgreSQL's backup_manifest.
Format 2, layout "bundles": independently compressed frames in bundles and
per-file objects, located by a file index object (`index`), whose SHA-256 is
in `files` like every other object's.  A pitrflow that knows only format 1
refuses a format-2 manifest instead of misreading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pitrflow.catalog.records import seal as _seal
from pitrflow.catalog.records import unseal as _unseal
from pitrflow.errors import RepositoryError

LAYOUT_STREAM = "stream"
LAYOUT_BUNDLES = "bundles"
_FORMATS = {LAYOUT_STREAM: 1, LAYOUT_BUNDLES: 2}


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BackupManifest:
    id: str
    instance: str
    engine: str
    type: str  # "full" | "incremental"
    parent: str | None
    start_time: datetime
    stop_time: datetime
    start_lsn: int
    stop_lsn: int
    timeline: int
    server_version: int
    system_identifier: str
    segment_size: int
    files: tuple[FileEntry, ...]
    database_size_bytes: int
    duration_seconds: float
    compression: str
    tool_version: str
    extra: dict[str, Any] = field(default_factory=dict)
    layout: str = LAYOUT_STREAM
    index: str | None = None  # the file index object (layout "bundles")

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)


@dataclass(frozen=True)
class Mark:
    """Everything up to `lsn` on `timeline` is shipped; server time `time`."""

    instance: str
    timeline: int
    lsn: int
    time: datetime
    last_segment: str



def dump_manifest(manifest: BackupManifest) -> bytes:
    body = asdict(manifest)
    body["start_time"] = manifest.start_time.isoformat()
    body["stop_time"] = manifest.stop_time.isoformat()
    if manifest.layout == LAYOUT_STREAM:
        # Exactly what format 1 always held, so older readers keep reading it.
        del body["layout"], body["index"]
    return _seal("backup", body, fmt=_FORMATS[manifest.layout])


def load_manifest(data: bytes, key: str) -> BackupManifest:
    doc = _unseal("backup", data, key, formats=tuple(_FORMATS.values()))
    layout = doc.get("layout", LAYOUT_STREAM)
    if _FORMATS.get(layout) != doc["format"] or (layout == LAYOUT_BUNDLES
                                                 and not doc.get("index")):
        raise RepositoryError(f"{key} has layout {layout!r} in format {doc['format']}",
                              "it may be damaged; run pitr verify")
    try:
        return BackupManifest(
            id=doc["id"], instance=doc["instance"], engine=doc["engine"], type=doc["type"],
            parent=doc["parent"],
            start_time=datetime.fromisoformat(doc["start_time"]),
            stop_time=datetime.fromisoformat(doc["stop_time"]),
            start_lsn=int(doc["start_lsn"]), stop_lsn=int(doc["stop_lsn"]),
            timeline=int(doc["timeline"]), server_version=int(doc["server_version"]),
            system_identifier=str(doc["system_identifier"]),
            segment_size=int(doc["segment_size"]),
            files=tuple(FileEntry(**f) for f in doc["files"]),
            database_size_bytes=int(doc["database_size_bytes"]),
            duration_seconds=float(doc["duration_seconds"]),
            compression=doc["compression"], tool_version=doc["tool_version"],
            extra=doc.get("extra", {}),
            layout=layout, index=doc.get("index"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryError(f"{key} lacks a valid field: {exc}",
                              "it may be damaged; run pitr verify") from None


def dump_mark(mark: Mark) -> bytes:
    body = asdict(mark)
    body["time"] = mark.time.isoformat()
    return _seal("mark", body)


def load_mark(data: bytes, key: str) -> Mark:
    doc = _unseal("mark", data, key)
    try:
        return Mark(instance=doc["instance"], timeline=int(doc["timeline"]),
                    lsn=int(doc["lsn"]), time=datetime.fromisoformat(doc["time"]),
                    last_segment=doc["last_segment"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RepositoryError(f"{key} lacks a valid field: {exc}",
                              "it may be damaged; run pitr verify") from None
