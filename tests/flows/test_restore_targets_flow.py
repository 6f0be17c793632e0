"""The restore_to_point flow's target parameters travel to the engine as one target."""

from __future__ import annotations

from flows.restore_to_point import restore_to_point
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.wal.walship import ship_wal
from tests.conftest import Env, free_port, restored_ids
from tests.integration.test_restore_targets import _commit


def test_a_flow_restore_to_a_transaction_exclusive(env18: Env) -> None:
    env = env18
    _commit(env)
    take_backup(env.instance, env.repo)
    rows = [_commit(env) for _ in range(3)]
    ship_wal(env.instance, env.repo)
    port = free_port()
    plan = restore_to_point(instance="main", pgdata=str(env.root / "dry"),
                            target_xid=rows[1][1], exclusive=True, dry_run=True,
                            config_path=str(env.config_path))
    assert plan["dry_run"] and f"transaction {rows[1][1]} (exclusive" in plan["plan"]["target"]
    result = restore_to_point(instance="main", pgdata=str(env.root / "restored"), port=port,
                              target_xid=rows[1][1], exclusive=True,
                              config_path=str(env.config_path))
    assert "restored main to transaction" in result["summary"]
    assert restored_ids(port) == list(range(1, rows[1][0]))
