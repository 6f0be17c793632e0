"""Store WAL in the repository: whole segments, timeline history files, partial segments.

Shared by the batch ship run and the follower so both write the same keys.
Every object is compressed with zstd and stored under a key carrying the
SHA-256 of what is stored, through the repository's atomic put: an object is
absent or whole, never half-written.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path

import zstandard

from pitrflow.engines.postgres.catalog.snapshot import Catalog
from pitrflow.engines.postgres.wal.walnames import parse_history
from pitrflow.errors import PitrError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import (
    HistoryEntry,
    PartialEntry,
    WalEntry,
    history_key,
    partial_key,
    wal_key,
)

log = logging.getLogger("pitrflow.ship")

ZSTD_LEVEL = 3


def store_segment(repo: Repository, instance: str, path: Path, timeline: int) -> WalEntry:
    data = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(path.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    key = wal_key(instance, timeline, path.name, digest)
    repo.put_bytes(key, data)
    return WalEntry(key, timeline, path.name, digest, len(data))


def store_history(repo: Repository, catalog: Catalog, path: Path) -> bool:
    """Store a timeline history file unless one is stored; True when it was new."""
    tli = int(path.name[:8], 16)
    if tli in catalog.history_entries:
        return False
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = history_key(catalog.instance, tli, digest)
    repo.put_bytes(key, data)
    catalog.history_entries[tli] = HistoryEntry(key, tli, digest)
    catalog.histories[tli] = parse_history(data.decode())
    return True


def store_partial(repo: Repository, instance: str, data: bytes, timeline: int, segment: str,
                  end_lsn: int, when: datetime, segment_size: int) -> PartialEntry:
    """The segment in progress, zero-padded to a whole segment as PostgreSQL expects a file."""
    if len(data) < segment_size:
        data = data + bytes(segment_size - len(data))
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data[:segment_size])
    digest = hashlib.sha256(packed).hexdigest()
    key = partial_key(instance, timeline, segment, end_lsn, when, digest)
    repo.put_bytes(key, packed)
    return PartialEntry(key, timeline, segment, end_lsn, when, digest, len(packed))


def drop_superseded_partials(repo: Repository, catalog: Catalog) -> int:
    """Delete partials that a whole segment or a longer partial replaced (after it was stored)."""
    dropped = 0
    for entry in catalog.superseded_partials():
        try:
            repo.delete(entry.key)
        except PitrError as exc:  # harmless leftover: readers never prefer it
            log.warning("could not delete superseded partial %s: %s", entry.key, exc.message)
            continue
        catalog.partials.remove(entry)
        dropped += 1
    return dropped
