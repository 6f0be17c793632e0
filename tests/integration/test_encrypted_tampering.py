"""Tampering with an encrypted repository behind pitrflow's back: each kind is refused,
naming the object, by the reader that meets it (catalog, restore, restore_command).

The bytes are changed the way someone with write access to the store would: in the
files of a filesystem repository.  Chunks and names are bound by the format
(storage.crypto_format), so no change passes as valid data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import ChecksumMismatchError
from pitrflow.storage import crypto_format as fmt
from pitrflow.storage.layout import manifest_key
from tests.conftest import Env
from tests.encryption import with_passphrase
from tests.integration import test_pitr_postgres as pitr


def wal_fetch(env: Env, name: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config",
                           str(env.config_path), "wal-fetch", "main", name, str(dest)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ))


def one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def two_backups(pg18, make_env, monkeypatch: pytest.MonkeyPatch) -> tuple[Env, list[str]]:
    env = with_passphrase(make_env(pg18), monkeypatch)
    ids = []
    for _ in range(2):
        env.commit_row()
        ids.append(take_backup(env.instance, env.repo).manifest.id)
        # Rows that do not compress much, so some WAL objects span several chunks.
        env.sql("INSERT INTO items(note) SELECT md5(random()::text) || md5(random()::text) "
                "FROM generate_series(1, 5000)")
        for _ in range(3):
            env.commit_row()
            env.sql("SELECT pg_switch_wal()")
        ship_wal(env.instance, env.repo)
    return env, ids


def path_of(env: Env, key: str) -> Path:
    return env.root / "repo" / key


def test_a_flipped_byte_in_a_wal_object_is_refused_naming_it(two_backups, tmp_path) -> None:
    env, _ = two_backups
    segment = read_catalog(env.repo, "main").wal_entries()[-2]
    stored = path_of(env, segment.key)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))

    result = wal_fetch(env, segment.segment, tmp_path / "x")
    assert result.returncode == 255  # fatal for PostgreSQL: never read as the end of WAL
    one_line(result, segment.key, "fails authentication at chunk")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ChecksumMismatchError, match=segment.key):
        pitr.restore(env, None, "flipped")
    assert not (env.root / "flipped").exists()


def test_a_truncated_object_is_refused_naming_it(two_backups, tmp_path) -> None:
    env, ids = two_backups
    # A WAL object cut at a chunk boundary keeps a plausible size: its last chunk says
    # "not last", so the cut shows.
    segment = max(read_catalog(env.repo, "main").wal_entries(), key=lambda e: e.size)
    stored = path_of(env, segment.key)
    data = stored.read_bytes()
    assert len(data) > fmt.chunk_offset(1), "segment smaller than one chunk"
    stored.write_bytes(data[:fmt.chunk_offset(1)])
    result = wal_fetch(env, segment.segment, tmp_path / "x")
    assert result.returncode == 255
    one_line(result, segment.key, "fails authentication at chunk 0")

    # A backup object cut anywhere: the catalog no longer takes the backup, naming it.
    backup = read_catalog(env.repo, "main").backup(ids[1])
    assert backup is not None
    largest = max(backup.files, key=lambda f: f.size)
    tar = path_of(env, f"main/backups/{ids[1]}/{largest.name}")
    tar.write_bytes(tar.read_bytes()[:-1000])
    catalog = read_catalog(env.repo, "main")
    assert [b.id for b in catalog.backups] == [ids[0]]
    assert largest.name in catalog.rejected[ids[1]]


def test_two_wal_objects_swapped_by_name_are_refused(two_backups, tmp_path) -> None:
    env, _ = two_backups
    entries = read_catalog(env.repo, "main").wal_entries()
    first, second = path_of(env, entries[-3].key), path_of(env, entries[-2].key)
    swap = tmp_path / "swap"
    shutil.move(first, swap)
    shutil.move(second, first)
    shutil.move(swap, second)

    for entry in (entries[-3], entries[-2]):
        result = wal_fetch(env, entry.segment, tmp_path / entry.segment)
        assert result.returncode == 255
        one_line(result, entry.key, "holds another object's bytes")
    with pytest.raises(ChecksumMismatchError, match="fails authentication"):
        pitr.restore(env, None, "swapped")


def test_a_manifest_from_another_backup_put_in_place_is_refused(two_backups) -> None:
    env, (older, newer) = two_backups
    shutil.copyfile(path_of(env, manifest_key("main", older)),
                    path_of(env, manifest_key("main", newer)))

    catalog = read_catalog(env.repo, "main")
    assert [b.id for b in catalog.backups] == [older]
    reason = catalog.rejected[newer]
    assert f"object {manifest_key('main', newer)} fails authentication" in reason
    info = subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config",
                           str(env.config_path), "info", "main", "--json"],
                          capture_output=True, text=True, check=True, env=dict(os.environ))
    rejected = {r["id"]: r["reason"] for r in json.loads(info.stdout)["rejected"]}
    assert rejected == {newer: reason}


def test_a_deleted_data_key_loses_only_what_it_encrypted(two_backups) -> None:
    env, (older, newer) = two_backups
    key_id = read_catalog(env.repo, "main").backup(newer).extra["encryption"]["data_key"]
    assert key_id != read_catalog(env.repo, "main").backup(older).extra["encryption"][
        "data_key"]
    for wrap in (env.root / "repo" / "_keys").glob(f"epoch-*-{key_id}.*.json"):
        wrap.unlink()

    catalog = read_catalog(env.repo, "main")
    assert [b.id for b in catalog.backups] == [older]
    assert f"data key {key_id}" in catalog.rejected[newer]
    assert f"object {manifest_key('main', newer)}" in catalog.rejected[newer]
