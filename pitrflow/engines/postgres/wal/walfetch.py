"""PostgreSQL's restore_command: hand one WAL file (or history file) to recovery.

PostgreSQL calls this once per file, so it does no orchestration: the spool
first (segments the restore prefetched and verified), then the repository.
Exit 0 = delivered, 1 = not found (recovery moves on), 255 = corruption or
failure, which PostgreSQL treats as fatal instead of as the end of WAL, so a
damaged segment can never silently end a restore early.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from pitrflow.engines.postgres.restore.fetch import fetch_wal_segment
from pitrflow.engines.postgres.wal.walnames import (
    DEFAULT_SEGMENT_SIZE,
    is_history_name,
    is_segment_name,
    parse_segment_name,
)
from pitrflow.storage.base import HashingReader, Repository
from pitrflow.storage.layout import HistoryEntry, WalEntry, parse_key

FOUND, NOT_FOUND, FATAL = 0, 1, 255


def _deliver_from_spool(spool: Path, name: str, dest: Path) -> bool:
    source = spool / name
    if not source.exists():
        return False
    tmp = dest.with_name(dest.name + ".pitrflow-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)  # free, and keeps the spool copy for a repeated request
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return True


def beyond_last(name: str, last: str | None, segment_size: int) -> bool:
    if last is None or not is_segment_name(name):
        return False
    return parse_segment_name(name, segment_size)[1] > parse_segment_name(last, segment_size)[1]


def wal_fetch(repo: Repository | None, instance: str, name: str, dest: Path,
              spool: Path | None = None, last: str | None = None,
              segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    if spool is not None and _deliver_from_spool(spool, name, dest):
        return FOUND
    if beyond_last(name, last, segment_size) or repo is None:
        return NOT_FOUND
    if is_segment_name(name):
        prefix = f"{instance}/wal/{name[:8]}/{name}-"
    elif is_history_name(name):
        prefix = f"{instance}/timelines/{name}-"
    else:
        return NOT_FOUND
    for info in repo.list(prefix):
        parsed = parse_key(instance, info.key, info.size)
        if isinstance(parsed, WalEntry):
            fetch_wal_segment(repo, parsed, dest, segment_size)
            return FOUND
        if isinstance(parsed, HistoryEntry):
            reader = HashingReader(repo.open_reader(parsed.key), parsed.key)
            data = reader.read()
            reader.close()
            reader.verify(parsed.sha256)
            tmp = dest.with_name(dest.name + ".pitrflow-tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            return FOUND
    return NOT_FOUND
