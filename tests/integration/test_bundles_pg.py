"""Layout v2 against real PostgreSQL: frames of a large relation, corruption named by object
and file, v1 backups beside v2 ones, server-side compression, progress to 100%."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.ops import expire
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.catalog.verify import verify
from pitrflow.engines.postgres.render import backup_markdown, info_dict, info_text
from pitrflow.engines.postgres.restore.unpack import load_backup_index
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import ChecksumMismatchError
from pitrflow.progress import ProgressState, progress_sink
from tests.conftest import Env, restored_ids
from tests.integration.test_pitr_postgres import restore
from tests.v1_writer import take_v1_stream_backup

SMALL_FRAMES = "frame_size_mb = 1\nbundle_size_mb = 2"


def make_blob(env: Env, mib: int) -> str:
    """A table of incompressible rows, one relation file of about `mib` MiB; its checksum."""
    env.sql("DROP TABLE IF EXISTS blob")
    env.sql("CREATE TABLE blob AS SELECT g, decode(string_agg(md5(random()::text || i), ''), "
            "'hex') AS b FROM generate_series(1, %s) g, generate_series(1, 32768) i GROUP BY g",
            (mib * 2,))
    env.sql("ALTER TABLE blob ALTER COLUMN b SET STORAGE EXTERNAL")
    return blob_sum(env.cluster.port)


def blob_sum(port: int) -> str:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        row = conn.execute("SELECT md5(string_agg(md5(b), ',' ORDER BY g)) FROM blob").fetchone()
    assert row is not None
    return str(row[0])


def relation_path(env: Env, table: str) -> str:
    return str(env.sql("SELECT pg_relation_filepath(%s)", (table,))[0][0])


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_large_relation_in_frames_restores_and_flipped_bytes_name_object_and_file(
        pg18, make_env) -> None:
    env: Env = make_env(pg18, repo_extra=SMALL_FRAMES)
    checksum = make_blob(env, 3)
    env.commit_row()
    backup = take_backup(env.instance, env.repo).manifest
    last_id, after = env.commit_row()
    ship_wal(env.instance, env.repo)

    assert backup.layout == "bundles" and backup.index == "index.json.zst"
    index = load_backup_index(env.repo, backup)
    toast = str(env.sql("SELECT pg_relation_filepath(reltoastrelid) FROM pg_class "
                        "WHERE relname = 'blob'")[0][0])
    big = index.entry(toast)
    assert big is not None and big.size > 3 * 1024 * 1024 and len(big.frames) >= 3
    record = index.object(big.frames[0].object)
    assert record is not None and record.kind == "file"
    assert len({o.name for o in index.objects if o.kind == "bundle"}) >= 2

    outcome = restore(env, after, "whole")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))
    assert blob_sum(outcome.port) == checksum

    backup_dir = env.root / "repo" / "main" / "backups" / backup.id
    small = index.entry(relation_path(env, "items"))
    assert small is not None and index.object(small.frames[0].object).kind == "bundle"
    for entry, frame in ((small, small.frames[0]), (big, big.frames[len(big.frames) // 2])):
        victim = backup_dir / frame.object
        flip(victim, frame.offset + frame.length // 2)
        with pytest.raises(ChecksumMismatchError) as caught:
            restore(env, after, "damaged")
        message = caught.value.message
        assert frame.object in message and f"(file {entry.path})" in message, message
        assert not (env.root / "damaged").exists()
        flip(victim, frame.offset + frame.length // 2)


def test_v1_and_v2_backups_live_side_by_side(env18: Env) -> None:
    env = env18
    env.commit_row()
    old = take_v1_stream_backup(env.instance, env.repo)
    first_id, between = env.commit_row()
    ship_wal(env.instance, env.repo)
    new = take_backup(env.instance, env.repo).manifest
    last_id, after = env.commit_row()
    ship_wal(env.instance, env.repo)
    catalog = read_catalog(env.repo, "main")
    assert [b.layout for b in catalog.backups] == ["stream", "bundles"]
    assert [b["format"] for b in info_dict(catalog)["backups"]] == ["v1 stream", "v2 bundles"]
    assert "v1 stream" in info_text(catalog) and "v2 bundles" in info_text(catalog)

    outcome = restore(env, between, "from-v1")
    assert restored_ids(outcome.port) == list(range(1, first_id + 1))
    outcome = restore(env, after, "from-v2")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))
    results = verify(env.instance, env.repo)
    assert [(r.backup_id, r.ok, r.pg_verifybackup) for r in results] == [
        (old.id, True, "ok"), (new.id, True, "ok")]

    env.config_path.write_text(env.config_path.read_text()
                               + "\n[instances.main.retention]\nfull_count = 1\n")
    from pitrflow.config import load_config

    expire(load_config(env.config_path).instance("main"), env.repo, dry_run=False)
    assert list(env.repo.list(f"main/backups/{old.id}/")) == []
    kept = {o.key.rsplit("/", 1)[1] for o in env.repo.list(f"main/backups/{new.id}/")}
    assert kept == {f.name for f in new.files} | {"manifest.json"}


def test_server_side_compression_keeps_the_v1_layout(pg15_cluster, make_env) -> None:
    if pg15_cluster is None:
        pytest.skip("system PostgreSQL 15 binaries are not installed (/usr/lib/postgresql/15)")
    env: Env = make_env(pg15_cluster, 'compress = "server"')
    env.commit_row()
    outcome = take_backup(env.instance, env.repo)
    assert outcome.manifest.layout == "stream"
    assert outcome.manifest.compression.startswith("server-zstd")
    assert "v1 stream" in backup_markdown(outcome)
    last_id, after = env.commit_row()
    ship_wal(env.instance, env.repo)
    restored = restore(env, after, "server-zstd")
    assert restored_ids(restored.port) == list(range(1, last_id + 1))


def test_progress_reaches_exactly_100_percent_once(pg18, make_env, caplog) -> None:
    env: Env = make_env(pg18, repo_extra=SMALL_FRAMES)
    make_blob(env, 2)
    env.commit_row()
    seen: list[ProgressState] = []
    caplog.set_level(logging.INFO, logger="pitrflow")
    with progress_sink(seen.append):
        outcome = take_backup(env.instance, env.repo)
        last_id, _ = env.commit_row()
        ship_wal(env.instance, env.repo)
        restored = restore(env, None, "progress")
    assert restored_ids(restored.port) == list(range(1, last_id + 1))
    backups = [s for s in seen if s.what == "backup of main"]
    restores = [s for s in seen if s.what == "restore of main"]
    for states in (backups, restores):
        assert states[0].done == 0 and states[-1].finished and states[-1].percent == 100
        assert [s for s in states if s.finished] == [states[-1]]
        assert all(0 <= s.percent <= 100 for s in states)
        assert [s.done for s in states] == sorted(s.done for s in states)
    assert backups[-1].done >= outcome.manifest.database_size_bytes
    assert restores[-1].done >= outcome.manifest.database_size_bytes
    done_lines = [r.getMessage() for r in caplog.records
                  if r.name == "pitrflow.progress" and "done in" in r.getMessage()]
    assert len(done_lines) == 2, done_lines
    assert done_lines[0].startswith("backup of main: ") and "(100%)" in done_lines[0]
    assert done_lines[1].startswith("restore of main: ") and "(100%)" in done_lines[1]
    assert "v2 bundles" in backup_markdown(outcome)
