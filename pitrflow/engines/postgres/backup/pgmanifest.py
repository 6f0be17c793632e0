"""Reading PostgreSQL's own backup_manifest (written by pg_basebackup)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pitrflow.engines.postgres.wal.walnames import parse_lsn
from pitrflow.errors import CommandFailedError


@dataclass(frozen=True)
class PgManifestFacts:
    start_lsn: int
    stop_lsn: int
    timeline: int
    start_timeline: int
    database_size_bytes: int
    file_count: int


def read_pg_manifest(path: Path) -> PgManifestFacts:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandFailedError(f"pg_basebackup left no backup_manifest at {path}: {exc}",
                                 "is pg_basebackup 13 or newer?") from None
    return parse_pg_manifest(data, str(path))


def parse_pg_manifest(data: bytes, where: str) -> PgManifestFacts:
    try:
        doc = json.loads(data)
        ranges = doc["WAL-Ranges"]
        files = doc["Files"]
    except (ValueError, KeyError) as exc:
        raise CommandFailedError(f"backup_manifest {where} is not usable: {exc}",
                                 "is pg_basebackup 13 or newer?") from None
    return PgManifestFacts(
        start_lsn=parse_lsn(ranges[0]["Start-LSN"]),
        stop_lsn=parse_lsn(ranges[-1]["End-LSN"]),
        timeline=int(ranges[-1]["Timeline"]),
        start_timeline=int(ranges[0]["Timeline"]),
        database_size_bytes=sum(int(f["Size"]) for f in files),
        file_count=len(files),
    )
