"""expire, verify and check as real Prefect flow runs, with their artifacts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from flows.check import check
from flows.expire import expire
from flows.verify import verify
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import CheckFailedError, VerifyFailedError
from tests.conftest import Env
from tests.flows.test_flows import _artifact


def test_expire_verify_check_flows(env18: Env, pitrflow_events: Callable[[], list[Any]]
                                   ) -> None:
    env = env18
    env.config_path.write_text(env.config_path.read_text()
                               + "\n[instances.main.retention]\nfull_count = 1\n")
    first = take_backup(env.instance, env.repo).manifest
    env.commit_row()
    ship_wal(env.instance, env.repo)
    second = take_backup(env.instance, env.repo).manifest
    env.commit_row()
    ship_wal(env.instance, env.repo)
    config = str(env.config_path)

    planned = expire(instance="main", dry_run=True, config_path=config)
    assert planned["planned_deletions"] == [first.id] and planned["deleted_backups"] == []
    assert "Expire plan (dry run)" in asyncio.run(_artifact("expire-main"))
    done = expire(instance="main", config_path=config)
    assert done["deleted_backups"] == [first.id] and done["kept"] == [second.id]

    results = verify(instance="main", config_path=config)
    assert [r["backup_id"] for r in results] == [second.id] and results[0]["ok"]
    assert "ok" in asyncio.run(_artifact("verify-main"))

    lines = check(instance="main", config_path=config)
    assert all(c["ok"] or not c["critical"] for c in lines)
    assert "replication slot: OK" in asyncio.run(_artifact("check-main"))

    tar = max((env.root / "repo" / "main" / "backups" / second.id).glob("*.tar.zst"),
              key=lambda p: p.stat().st_size)
    data = bytearray(tar.read_bytes())
    data[100] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(VerifyFailedError, match=tar.name):
        verify(instance="main", config_path=config)
    with pytest.raises(CheckFailedError, match="backups verified"):
        check(instance="main", config_path=config)
    # Only the failed check is an event: a passing one is the normal case.
    [check_failed] = pitrflow_events()
    assert check_failed.event == "pitrflow.check.failed"
    assert check_failed.resource.id == "pitrflow.instance.main"
    assert "backups verified" in check_failed.payload["failed"]
    assert any(line.startswith("backups verified: FAILED") for line in
               check_failed.payload["lines"])


def test_backup_flow_expires_after_a_successful_backup(env18: Env) -> None:
    from flows.backup_full import backup_full
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog

    env = env18
    env.config_path.write_text(env.config_path.read_text()
                               + "\n[instances.main.retention]\nfull_count = 1\n")
    config = str(env.config_path)
    first = backup_full(instance="main", config_path=config)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    second = backup_full(instance="main", config_path=config)
    assert [b.id for b in read_catalog(env.repo, "main").backups] == [second["id"]]
    assert first["id"] in asyncio.run(_artifact("expire-main"))
