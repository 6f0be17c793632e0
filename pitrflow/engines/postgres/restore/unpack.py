"""Put one backup's files into a directory, whatever its layout.

v1 ("stream") backups unpack as one zstd | tar stream (fetch.extract_backup);
v2 ("bundles") backups are written file by file on `process_max` threads
(bundles.restorer), after their file index is fetched and checked against
the SHA-256 their manifest recorded.  Either way the directory ends with
PostgreSQL's backup_manifest, which pg_combinebackup and pg_verifybackup read.
"""

from __future__ import annotations

import os
from pathlib import Path

from pitrflow.engines.postgres.bundles.fetchplan import Wanted
from pitrflow.engines.postgres.bundles.fsutil import Owner
from pitrflow.engines.postgres.bundles.index import FileIndex, load_index
from pitrflow.engines.postgres.bundles.restorer import restore_files
from pitrflow.engines.postgres.bundles.writer import PG_MANIFEST
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES, BackupManifest
from pitrflow.engines.postgres.restore.fetch import extract_backup
from pitrflow.errors import RepositoryError
from pitrflow.storage.base import HashingReader, Repository
from pitrflow.storage.layout import backup_object, backup_prefix


def read_checked(repo: Repository, manifest: BackupManifest, name: str) -> bytes:
    """A small object of the backup, whole, checked against its recorded size and SHA-256."""
    entry = manifest.file(name)
    if entry is None:
        raise RepositoryError(f"backup {manifest.id} lists no object {name}",
                              "the manifest is damaged; run pitr verify")
    key = backup_object(manifest.instance, manifest.id, name)
    reader = HashingReader(repo.open_reader(key), key)
    try:
        data = reader.read()
    finally:
        reader.close()
    reader.verify(entry.sha256, entry.size)
    return data


def load_backup_index(repo: Repository, manifest: BackupManifest) -> FileIndex:
    assert manifest.index is not None
    key = backup_object(manifest.instance, manifest.id, manifest.index)
    return load_index(read_checked(repo, manifest, manifest.index), key)


def unpack_backup(repo: Repository, manifest: BackupManifest, dest: Path, user: str | None, *,
                  wanted: Wanted | None = None, index: FileIndex | None = None,
                  what: str | None = None) -> None:
    """Unpack into `dest` (created if missing); `wanted` limits a v2 restore to some files
    (and frames of them)."""
    if manifest.layout != LAYOUT_BUNDLES:
        extract_backup(repo, manifest, dest, user)
        return
    owner = Owner.of(user)
    if not dest.exists():
        dest.mkdir(parents=True, mode=0o700)
        if owner is not None:
            os.chown(dest, owner.uid, owner.gid)
    index = index or load_backup_index(repo, manifest)
    restore_files(repo, backup_prefix(manifest.instance, manifest.id), index, dest, user=user,
                  threads=repo.transfer.process_max, wanted=wanted,
                  progress_what=what or f"restore of {manifest.instance} ({manifest.id})")
    target = dest / PG_MANIFEST
    target.write_bytes(read_checked(repo, manifest, PG_MANIFEST))
    if owner is not None:
        os.chown(target, owner.uid, owner.gid)
