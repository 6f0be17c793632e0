"""`pitr verify`: re-read everything a restore would need and say what is wrong.

For each chosen backup: every object against its recorded size and SHA-256
(for v2 backups also every frame against its own, decompressed, and every
file's CRC32C recomputed: bundles/check.py); the WAL from the backup's start
to the newest mark (present, checksummed, whole segments); and PostgreSQL's
own pg_verifybackup over the unpacked backup against its backup_manifest.
Results are stored in the repository so `pitr info` can show them.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard

from pitrflow import procs
from pitrflow.catalog.verify_records import store_verify_result
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import commands
from pitrflow.engines.postgres.binaries import find_binaries
from pitrflow.engines.postgres.bundles.check import check_objects
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES, BackupManifest
from pitrflow.engines.postgres.catalog.snapshot import Catalog, read_catalog
from pitrflow.engines.postgres.restore.unpack import load_backup_index, unpack_backup
from pitrflow.engines.postgres.wal.timelines import required_segments, timeline_path
from pitrflow.errors import PitrError, UsageError
from pitrflow.storage.base import CHUNK, HashingReader, Repository
from pitrflow.storage.layout import WalEntry, backup_object, backup_prefix

log = logging.getLogger("pitrflow.verify")


@dataclass
class VerifyResult:
    backup_id: str
    verified_at: str
    problems: list[str] = field(default_factory=list)
    objects_checked: int = 0
    wal_segments_checked: int = 0
    bytes_read: int = 0
    pg_verifybackup: str = "not run"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _check_object(repo: Repository, key: str, sha256: str, size: int | None) -> str | None:
    try:
        reader = HashingReader(repo.open_reader(key), key)
        try:
            while reader.read(CHUNK):
                pass
        finally:
            reader.close()
        reader.verify(sha256, size)
    except PitrError as exc:
        return exc.message
    return None


def _check_wal(repo: Repository, entry: WalEntry, segment_size: int) -> str | None:
    try:
        data = repo.get_bytes(entry.key)
    except PitrError as exc:
        return exc.message
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        return f"WAL object {entry.key} does not match its recorded sha256"
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        return f"WAL object {entry.key} does not decompress: {exc}"
    if len(raw) != segment_size:
        return f"WAL segment {entry.segment} holds {len(raw)} bytes, not {segment_size}"
    return None


def _pg_verifybackup(repo: Repository, instance: InstanceConfig, backup: BackupManifest,
                     scratch_root: Path | None) -> str:
    major = backup.server_version // 10000
    try:
        bins = find_binaries(major, instance.bin_dir, needs=("pg_verifybackup",))
    except PitrError as exc:
        return f"skipped: {exc.message}"
    work = Path(tempfile.mkdtemp(prefix="pitrflow-verify-", dir=scratch_root))
    try:
        unpack_backup(repo, backup, work / "data", None)
        result = procs.run(commands.verifybackup_argv(bins, work / "data"), check=False,
                           what="pg_verifybackup")
        if result.returncode != 0:
            return "failed: " + (procs.most_telling_line(result.stderr_tail)
                                 or f"exit status {result.returncode}")
        return "ok"
    except PitrError as exc:
        return f"failed: {exc.message}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verify(instance: InstanceConfig, repo: Repository, backup_id: str | None = None,
           scratch_root: Path | None = None) -> list[VerifyResult]:
    catalog = read_catalog(repo, instance.name)
    chosen = catalog.backups
    if backup_id is not None:
        found = catalog.backup(backup_id)
        if found is None:
            why = catalog.rejected.get(backup_id, "it is not in the repository")
            raise UsageError(f"backup {backup_id} of {instance.name} cannot be verified: {why}",
                             f"pitr info {instance.name} lists the backups")
        chosen = [found]
    wal_seen: dict[str, str | None] = {}
    results = []
    for backup in chosen:
        result = _verify_one(repo, instance, catalog, backup, wal_seen, scratch_root)
        store_verify_result(repo, instance.name, backup.id, result.to_dict())
        results.append(result)
    return results


def _verify_bundles(repo: Repository, backup: BackupManifest, result: VerifyResult) -> None:
    """The index and PostgreSQL's manifest whole; every data object frame by frame."""
    data_objects = {o for o in (f.name for f in backup.files) if o.endswith(".tar.zst")}
    for entry in backup.files:
        if entry.name in data_objects:
            continue
        key = backup_object(backup.instance, backup.id, entry.name)
        problem = _check_object(repo, key, entry.sha256, entry.size)
        result.objects_checked += 1
        result.bytes_read += entry.size
        if problem:
            result.problems.append(problem)
    if result.problems:
        return
    try:
        index = load_backup_index(repo, backup)
    except PitrError as exc:
        result.problems.append(exc.message)
        return
    listed = {o.name: o for o in index.objects}
    for entry in backup.files:
        record = listed.get(entry.name)
        if entry.name in data_objects and (record is None or record.sha256 != entry.sha256):
            result.problems.append(f"object {entry.name} of {backup.id} is not in its file "
                                   "index as the manifest records it")
    for check in check_objects(repo, backup_prefix(backup.instance, backup.id), index):
        result.objects_checked += 1
        result.bytes_read += check.bytes_read
        result.problems.extend(check.problems)


def _verify_one(repo: Repository, instance: InstanceConfig, catalog: Catalog,
                backup: BackupManifest, wal_seen: dict[str, str | None],
                scratch_root: Path | None) -> VerifyResult:
    result = VerifyResult(backup.id, datetime.now(UTC).isoformat())
    if backup.layout == LAYOUT_BUNDLES:
        _verify_bundles(repo, backup, result)
    else:
        for entry in backup.files:
            key = backup_object(instance.name, backup.id, entry.name)
            problem = _check_object(repo, key, entry.sha256, entry.size)
            result.objects_checked += 1
            result.bytes_read += entry.size
            if problem:
                result.problems.append(problem)
    mark = catalog.newest_mark  # (in follow mode it may lie in a partial segment)
    if mark is not None and mark.lsn > backup.start_lsn:
        path = timeline_path(mark.timeline, catalog.histories)
        for tli, segno, name in required_segments(backup.start_lsn, mark.lsn, path,
                                                  catalog.segment_size):
            entry = catalog.wal.get(tli, {}).get(segno)
            partial = catalog.partial_for(tli, segno) if entry is None else None
            if partial is not None and partial.end_lsn >= mark.lsn:
                # Follow mode: the newest mark may lie in the segment in progress.
                entry = WalEntry(partial.key, tli, partial.segment, partial.sha256, partial.size)
            if entry is None:
                result.problems.append(f"WAL segment {name} is missing (needed from "
                                       f"{backup.id} to the newest mark)")
                continue
            if entry.key not in wal_seen:
                wal_seen[entry.key] = _check_wal(repo, entry, catalog.segment_size)
            result.wal_segments_checked += 1
            if wal_seen[entry.key]:
                result.problems.append(str(wal_seen[entry.key]))
    if not result.problems:
        result.pg_verifybackup = _pg_verifybackup(repo, instance, backup, scratch_root)
        if result.pg_verifybackup.startswith("failed"):
            result.problems.append(f"pg_verifybackup {backup.id}: {result.pg_verifybackup}")
    return result

