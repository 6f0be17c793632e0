"""Retention never breaks a chain, verify names every bad object, check tells what is wrong."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from pitrflow.config import RetentionConfig
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.backup.incremental import take_incremental
from pitrflow.engines.postgres.catalog.expire import execute_expire
from pitrflow.engines.postgres.catalog.ops import expire
from pitrflow.engines.postgres.catalog.retention import plan_expire
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.catalog.verify import verify
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walnames import parse_segment_name
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import RestoreRefusedError
from pitrflow.storage.layout import EXPIRING_NAME
from tests.conftest import Env, free_port, restored_ids


def _history(env: Env) -> dict[str, object]:
    """Three full chains with incrementals and WAL, in compressed time."""
    made: dict[str, object] = {}
    for n in (1, 2, 3):
        made[f"full{n}"] = take_backup(env.instance, env.repo).manifest
        made[f"after_full{n}"] = env.commit_row()
        ship_wal(env.instance, env.repo)
        made[f"inc{n}"] = take_incremental(env.instance, env.repo, False).manifest
        made[f"after_inc{n}"] = env.commit_row()
        ship_wal(env.instance, env.repo)
        time.sleep(0.2)
    return made


def _restore(env: Env, target, name: str) -> list[int]:  # type: ignore[no-untyped-def]
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(target))
    outcome = execute_restore(plan, RestoreRequest(env.instance, env.root / name, free_port()),
                              env.repo)
    return restored_ids(outcome.port)


def test_retention_by_count_keeps_chains_and_restores_inside_the_window(env18: Env) -> None:
    env = env18
    made = _history(env)
    ids = {k: v.id for k, v in made.items() if hasattr(v, "id")}  # type: ignore[union-attr]
    catalog = read_catalog(env.repo, "main")
    plan = plan_expire(catalog, RetentionConfig(full_count=2), datetime.now(UTC))
    assert sorted(plan.delete_backups) == sorted([ids["full1"], ids["inc1"]])
    assert set(plan.kept_backups) == {ids["full2"], ids["inc2"], ids["full3"], ids["inc3"]}
    full2 = made["full2"]
    size = catalog.segment_size
    first_kept = full2.start_lsn // size  # type: ignore[attr-defined]
    assert plan.delete_wal
    assert all(parse_segment_name(e.segment, size)[1] < first_kept for e in plan.delete_wal)
    remaining = [e for e in catalog.wal_entries() if e not in plan.delete_wal]
    assert min(parse_segment_name(e.segment, size)[1] for e in remaining) == first_kept
    execute_expire(env.repo, catalog, plan)

    after = read_catalog(env.repo, "main")
    assert {b.id for b in after.backups} == set(plan.kept_backups)
    assert not after.rejected  # nothing left that no manifest names
    leftover = [k for k in after.object_keys if ids["full1"] in k or ids["inc1"] in k]
    assert leftover == []
    # Every point inside the kept window still restores exactly.
    for key in ("after_full2", "after_inc2", "after_inc3"):
        last_id, when = made[key]  # type: ignore[misc]
        assert _restore(env, when, f"r-{key}") == list(range(1, last_id + 1))
    # Nothing older is restorable.
    with pytest.raises(RestoreRefusedError, match="before the earliest recoverable point"):
        plan_restore(after, RestoreTarget(made["after_full1"][1]))  # type: ignore[index]


def test_retention_by_window_keeps_the_anchor_chain(env18: Env) -> None:
    env = env18
    made = _history(env)
    inc2 = made["inc2"]
    # Promise: restorable from just after inc2 finished (its chain is the anchor).
    window_start = inc2.stop_time + timedelta(milliseconds=50)  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    days = (now - window_start).total_seconds() / 86400
    plan = plan_expire(read_catalog(env.repo, "main"), RetentionConfig(window_days=days), now)
    assert sorted(plan.delete_backups) == sorted([made["full1"].id, made["inc1"].id])  # type: ignore
    reasons = {d.backup_id: d.reason for d in plan.decisions}
    assert "depends on it" in reasons[made["full2"].id]  # type: ignore[attr-defined]


def test_interrupted_expire_is_finished_by_the_next(env18: Env) -> None:
    env = env18
    first = take_backup(env.instance, env.repo).manifest
    env.commit_row()
    ship_wal(env.instance, env.repo)
    take_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    env.config_path.write_text(env.config_path.read_text()
                               + "\n[instances.main.retention]\nfull_count = 1\n")
    from pitrflow.config import load_config

    instance = load_config(env.config_path).instance("main")
    # Interrupt right after the manifest is gone: marker written, manifest deleted.
    prefix = f"main/backups/{first.id}/"
    env.repo.put_bytes(prefix + EXPIRING_NAME, b'{"expiring": true}')
    env.repo.delete(prefix + "manifest.json")
    catalog = read_catalog(env.repo, "main")
    assert first.id in catalog.expiring and catalog.backup(first.id) is None
    plan, result = expire(instance, env.repo, dry_run=False)
    assert first.id in plan.finish_expiring and result is not None
    assert list(env.repo.list(prefix)) == []
    assert read_catalog(env.repo, "main").rejected == {}


def test_verify_names_every_bad_object(env18: Env) -> None:
    env = env18
    backup = take_backup(env.instance, env.repo).manifest
    for _ in range(2):
        env.commit_row()
        ship_wal(env.instance, env.repo)
    results = verify(env.instance, env.repo)
    assert [r.ok for r in results] == [True] and results[0].pg_verifybackup == "ok"

    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None))
    # Damage through the repository interface, so the same body runs on every driver.
    tar = f"main/backups/{backup.id}/" + max(
        (f for f in backup.files if f.name.endswith(".tar.zst")), key=lambda f: f.size).name
    data = bytearray(env.repo.get_bytes(tar))
    data[len(data) // 3] ^= 0x01
    env.repo.put_bytes(tar, bytes(data))
    truncated, missing = plan.wal[-1], plan.wal[-2]
    whole = env.repo.get_bytes(truncated.key)
    env.repo.put_bytes(truncated.key, whole[: len(whole) // 2])
    env.repo.delete(missing.key)
    problems = " | ".join(verify(env.instance, env.repo)[0].problems)
    assert tar.rsplit("/", 1)[1] in problems
    assert truncated.segment in problems or truncated.key in problems
    assert f"WAL segment {missing.segment} is missing" in problems


def test_check_reports_dropped_slot_and_stale_mark(env18: Env) -> None:
    env = env18
    take_backup(env.instance, env.repo)
    ship_wal(env.instance, env.repo)
    env.config_path.write_text(env.config_path.read_text()
                               + "\n[instances.main.check]\nmax_mark_age_minutes = 0.01\n")
    time.sleep(1.0)
    env.sql("SELECT pg_drop_replication_slot(%s)", (env.instance.slot_name,))
    result = subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config",
                             str(env.config_path), "check", "main"], capture_output=True,
                            text=True, check=False)
    assert result.returncode != 0
    lines = result.stdout.splitlines()
    slot = next(line for line in lines if line.startswith("replication slot:"))
    assert "FAILED" in slot and "does not exist" in slot
    mark = next(line for line in lines if line.startswith("newest WAL mark:"))
    assert "FAILED" in mark and "falling behind" in mark
    assert next(line for line in lines if line.startswith("server:")).endswith(")")
    assert "server: OK" in result.stdout and "repository writable: OK" in result.stdout
