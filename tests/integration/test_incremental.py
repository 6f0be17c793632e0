"""Incremental backups on PostgreSQL 18: the seed's schedule in compressed time."""

from __future__ import annotations

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.backup.incremental import take_incremental
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walnames import segment_name
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import BackupRefusedError, RestoreRefusedError
from tests.conftest import Env, free_port, restored_ids


def restore(env: Env, target, name: str):  # type: ignore[no-untyped-def]
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(target))
    request = RestoreRequest(env.instance, env.root / name, free_port(),
                             config_file=env.config_path)
    return plan, execute_restore(plan, request, env.repo)


def commits(env: Env, n: int) -> tuple[int, object]:
    last = (0, None)
    for _ in range(n):
        last = env.commit_row()
    return last


def test_seed_timeline_full_incrementals_and_wal(env18: Env) -> None:
    env = env18
    env.sql("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 8) AS t "
            "FROM generate_series(1, 20000) g")
    full = take_backup(env.instance, env.repo).manifest
    before_first_inc = commits(env, 3)
    ship_wal(env.instance, env.repo)
    incs = []
    between = []
    for _ in range(3):
        incs.append(take_incremental(env.instance, env.repo, allow_full_fallback=False).manifest)
        between.append(commits(env, 3))
        env.sql("UPDATE filler SET t = upper(t) WHERE g %% 50 = 0")
        ship_wal(env.instance, env.repo)
    after_last = commits(env, 2)
    ship_wal(env.instance, env.repo)

    assert [i.type for i in incs] == ["incremental"] * 3
    assert incs[0].parent == full.id and incs[1].parent == incs[0].id
    assert incs[2].parent == incs[1].id
    assert all(i.size_bytes < full.size_bytes / 2 for i in incs)
    assert incs[0].extra["saved_bytes_vs_full"] > 0

    # Before the first incremental: the full alone.
    plan, outcome = restore(env, before_first_inc[1], "r0")
    assert [b.id for b in plan.chain] == [full.id]
    assert restored_ids(outcome.port) == list(range(1, before_first_inc[0] + 1))
    # Between incrementals: full + first incremental.
    plan, outcome = restore(env, between[0][1], "r1")
    assert [b.id for b in plan.chain] == [full.id, incs[0].id]
    assert restored_ids(outcome.port) == list(range(1, between[0][0] + 1))
    # After the last incremental: the whole chain, and less WAL than from the full alone.
    plan, outcome = restore(env, after_last[1], "r3")
    assert [b.id for b in plan.chain] == [full.id, *(i.id for i in incs)]
    assert restored_ids(outcome.port) == list(range(1, after_last[0] + 1))
    size = plan.segment_size
    # Replay starts at the last incremental's start, not the full's.
    assert plan.wal[0].segment == segment_name(incs[2].timeline, incs[2].start_lsn // size, size)
    catalog = read_catalog(env.repo, "main")
    from_full = plan_restore(_without(catalog, {i.id for i in incs}), RestoreTarget(after_last[1]))
    assert len(plan.wal) < len(from_full.wal)
    assert "verify" in outcome.phases and "rebuild" in outcome.phases
    # The newest mark.
    plan, outcome = restore(env, None, "latest")
    assert restored_ids(outcome.port) == list(range(1, after_last[0] + 1))


def _without(catalog, ids):  # type: ignore[no-untyped-def]
    import copy

    trimmed = copy.copy(catalog)
    trimmed.backups = [b for b in catalog.backups if b.id not in ids]
    return trimmed


def test_broken_chain_is_refused_before_writing(env18: Env) -> None:
    env = env18
    take_backup(env.instance, env.repo)
    env.commit_row()
    inc1 = take_incremental(env.instance, env.repo, allow_full_fallback=False).manifest
    env.commit_row()
    take_incremental(env.instance, env.repo, allow_full_fallback=False)
    _, after = env.commit_row()
    ship_wal(env.instance, env.repo)

    # Corrupt one byte of the middle link's largest object: same size, wrong checksum.
    biggest = max((f for f in inc1.files if f.name.endswith(".tar.zst")), key=lambda f: f.size)
    victim = env.root / "repo" / "main" / "backups" / inc1.id / biggest.name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x55
    victim.write_bytes(bytes(data))
    target_dir = env.root / "corrupt"
    with pytest.raises(RestoreRefusedError, match=inc1.id):
        restore(env, after, "corrupt")
    assert not target_dir.exists()

    # A missing middle link: the planner names it and falls back to the older full + WAL.
    (victim.parent / "manifest.json").unlink()
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(after))
    assert len(plan.chain) == 1 and plan.chain[0].type == "full"
    assert any(inc1.id in reason for reason in plan.reasons)


def test_summarize_wal_off_refused_or_falls_back(env18: Env) -> None:
    env = env18
    take_backup(env.instance, env.repo)
    env.sql("ALTER SYSTEM SET summarize_wal = off")
    env.sql("SELECT pg_reload_conf()")
    try:
        import time

        time.sleep(0.5)
        with pytest.raises(BackupRefusedError, match="summarize_wal is off"):
            take_incremental(env.instance, env.repo, allow_full_fallback=False)
        outcome = take_incremental(env.instance, env.repo, allow_full_fallback=True)
        assert outcome.manifest.type == "full"
        assert "summarize_wal" in outcome.notes[0]
    finally:
        env.sql("ALTER SYSTEM SET summarize_wal = on")
        env.sql("SELECT pg_reload_conf()")


def test_no_backup_yet_falls_back_to_full(env18: Env) -> None:
    with pytest.raises(BackupRefusedError, match="no backup of the instance yet"):
        take_incremental(env18.instance, env18.repo, allow_full_fallback=False)
    outcome = take_incremental(env18.instance, env18.repo, allow_full_fallback=True)
    assert outcome.manifest.type == "full"


def test_pg15_refuses_incremental(pg15_cluster, make_env) -> None:  # type: ignore[no-untyped-def]
    if pg15_cluster is None:
        pytest.skip("system PostgreSQL 15 binaries are not installed")
    env = make_env(pg15_cluster)
    take_backup(env.instance, env.repo)
    with pytest.raises(BackupRefusedError, match="PostgreSQL 15 has no incremental backup"):
        take_incremental(env.instance, env.repo, allow_full_fallback=False)
    outcome = take_incremental(env.instance, env.repo, allow_full_fallback=True)
    assert outcome.manifest.type == "full" and "PostgreSQL 15" in outcome.notes[0]


def test_killed_incremental_leaves_parent_for_the_next(env18: Env) -> None:
    """An incremental that never got its manifest is invisible; the next bases on the last valid."""
    env = env18
    full = take_backup(env.instance, env.repo).manifest
    env.commit_row()
    broken = take_incremental(env.instance, env.repo, allow_full_fallback=False).manifest
    # Simulate a run killed before its manifest was written.
    (env.root / "repo" / "main" / "backups" / broken.id / "manifest.json").unlink()
    catalog = read_catalog(env.repo, "main")
    assert broken.id in catalog.rejected and catalog.backup(broken.id) is None
    env.commit_row()
    nxt = take_incremental(env.instance, env.repo, allow_full_fallback=False).manifest
    assert nxt.parent == full.id
