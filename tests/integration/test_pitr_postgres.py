"""Point-in-time recovery against real PostgreSQL: exactness, refusals, idle targets, gaps."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import RestoreRefusedError, WalGapError
from tests.conftest import Env, free_port, restored_ids


def restore(env: Env, target, name: str):  # type: ignore[no-untyped-def]
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(target))
    request = RestoreRequest(env.instance, env.root / name, free_port(),
                             config_file=env.config_path)
    return execute_restore(plan, request, env.repo)


def test_restores_land_exactly_on_committed_rows(env: Env) -> None:
    checkpoints: list[tuple[int, object]] = []
    checkpoints.append(env.commit_row())
    take_backup(env.instance, env.repo)
    for _ in range(3):
        checkpoints.append(env.commit_row())
    ship_wal(env.instance, env.repo)
    for _ in range(3):
        checkpoints.append(env.commit_row())
    take_backup(env.instance, env.repo)
    for _ in range(3):
        checkpoints.append(env.commit_row())
    ship_wal(env.instance, env.repo)
    checkpoints.append(env.commit_row())  # committed after the newest mark: never restorable
    # Targets: right after row 3 (first backup + WAL), row 6 (between ship and second backup,
    # so the first backup is used), row 9 (second backup + WAL).
    for index in (2, 5, 8):
        last_id, after = checkpoints[index]
        outcome = restore(env, after, f"r{index}")
        assert restored_ids(outcome.port) == list(range(1, last_id + 1)), f"target {index}"
    outcome = restore(env, None, "latest")
    assert restored_ids(outcome.port) == list(range(1, checkpoints[-2][0] + 1))


def test_idle_database_restores_to_target_after_last_commit(env: Env) -> None:
    take_backup(env.instance, env.repo)
    last_id, after = env.commit_row()
    ship_wal(env.instance, env.repo)
    # Nothing commits from here on: the target lies after the last commit, before the mark.
    import time

    time.sleep(0.3)
    mark = ship_wal(env.instance, env.repo).mark
    target = mark.time - timedelta(milliseconds=100)
    assert target > after
    outcome = restore(env, target, "idle")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))


def _snapshot(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_refusals_change_nothing(env: Env) -> None:
    _, before_backup = env.commit_row()
    take_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    catalog = read_catalog(env.repo, "main")
    window_end = catalog.newest_mark.time  # type: ignore[union-attr]
    repo_before = _snapshot(env.root / "repo")

    with pytest.raises(RestoreRefusedError, match="before the earliest recoverable point"):
        plan_restore(catalog, RestoreTarget(before_backup))
    with pytest.raises(RestoreRefusedError, match="after the newest shipped WAL mark"):
        plan_restore(catalog, RestoreTarget(window_end + timedelta(seconds=5)))

    busy = env.root / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    plan = plan_restore(catalog, RestoreTarget(None))
    with pytest.raises(RestoreRefusedError, match="not empty"):
        execute_restore(plan, RestoreRequest(env.instance, busy, free_port()), env.repo)
    assert _snapshot(busy) == ["keep.txt"]
    assert (busy / "keep.txt").read_text() == "mine"

    # A missing WAL segment inside the range is refused by the planner, naming it.
    victim = plan.wal[len(plan.wal) // 2]
    os.unlink(env.root / "repo" / victim.key)
    with pytest.raises(RestoreRefusedError, match=f"WAL segment {victim.segment} is missing"):
        plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None))
    assert set(_snapshot(env.root / "repo")) == set(repo_before) - {victim.key}


def test_ship_detects_a_deleted_segment_as_a_gap(env: Env) -> None:
    take_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    ship_wal(env.instance, env.repo)
    wal = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None)).wal
    assert len(wal) >= 3
    victim = wal[1]
    os.unlink(env.root / "repo" / victim.key)
    with pytest.raises(WalGapError, match=victim.segment):
        ship_wal(env.instance, env.repo)


def test_corrupted_v1_backup_object_is_detected_and_nothing_is_left(env18: Env) -> None:
    """A single-stream (v1) backup; v2's frames: test_bundles.py."""
    from pitrflow.errors import ChecksumMismatchError
    from tests.v1_writer import take_v1_stream_backup

    env = env18
    backup = take_v1_stream_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    tar = next((env.root / "repo" / "main" / "backups" / backup.id).glob("base.tar*"))
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0x10
    tar.write_bytes(bytes(data))
    target = env.root / "damaged"
    with pytest.raises(ChecksumMismatchError, match=tar.name):
        restore(env, None, "damaged")
    assert not target.exists()


def test_old_gap_narrows_the_window_but_a_new_full_lets_shipping_continue(env18: Env) -> None:
    env = env18
    take_backup(env.instance, env.repo)
    _, early = env.commit_row()
    ship_wal(env.instance, env.repo)
    ship_wal(env.instance, env.repo)
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None))
    victim = plan.wal[1]
    os.unlink(env.root / "repo" / victim.key)
    with pytest.raises(WalGapError):
        ship_wal(env.instance, env.repo)
    take_backup(env.instance, env.repo)  # what the hint says to do
    last_id, after = env.commit_row()
    ship_wal(env.instance, env.repo)  # no longer fails: the gap is before the newest backup
    with pytest.raises(RestoreRefusedError, match=victim.segment):
        plan_restore(read_catalog(env.repo, "main"), RestoreTarget(early))
    outcome = restore(env, after, "after-gap")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))


def test_restore_without_the_zstd_program(env18: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts without the zstd program decompress in-process; the result is the same."""
    import shutil as real_shutil

    from pitrflow.engines.postgres.restore import fetch

    which = real_shutil.which
    monkeypatch.setattr(fetch.shutil, "which",
                        lambda name, *a, **k: None if name == "zstd" else which(name, *a, **k))
    take_backup(env18.instance, env18.repo)
    last_id, after = env18.commit_row()
    ship_wal(env18.instance, env18.repo)
    outcome = restore(env18, after, "no-zstd")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))


def test_a_ship_lists_only_backups_wal_and_timelines(env18: Env) -> None:
    """Marks (one per ship) and drill evidence (many files a night) grow without end; a
    ship reads neither, so its repository listing stays the size of the WAL it keeps."""
    from pitrflow.storage.fs import FsRepository

    env = env18
    take_backup(env.instance, env.repo)
    for _ in range(3):
        env.commit_row()
        ship_wal(env.instance, env.repo)
    evidence = env.root / "repo" / "main" / "drills" / "20261126T023000.000000Z" / "docs"
    evidence.mkdir(parents=True)
    for n in range(50):
        (evidence / f"page-{n}.html").write_text("<html></html>")

    class Listing(FsRepository):
        listed: list[str] = []

        def list(self, prefix: str):  # type: ignore[no-untyped-def]
            for info in super().list(prefix):
                self.listed.append(info.key)
                yield info

    repo = Listing(env.root / "repo")
    env.commit_row()
    outcome = ship_wal(env.instance, repo)
    assert outcome.segments_shipped
    assert repo.listed and all(k.startswith(("main/backups/", "main/wal/", "main/timelines/"))
                               for k in repo.listed), sorted(set(repo.listed))[:5]
    # The full catalog still has the marks, and the ship's mark is the newest of them.
    catalog = read_catalog(env.repo, "main")
    assert len(catalog.marks) == 4 and catalog.newest_mark is not None
    assert catalog.newest_mark.lsn == outcome.mark.lsn
    assert not read_catalog(env.repo, "main", marks=False).marks
