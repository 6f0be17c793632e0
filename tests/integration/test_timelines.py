"""After a failover (a promoted copy becomes the source), WAL ships on the new timeline with
its history file, and restores follow the timeline history."""

from __future__ import annotations

import psycopg

from pitrflow.config import parse_config
from pitrflow.devtools.localpg import LocalCluster, default_bin_dir
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.storage import open_repository
from tests.conftest import free_port, restored_ids


def _config(root, port: int, slot: str):  # type: ignore[no-untyped-def]
    text = (f'[repository]\npath = "{root / "repo"}"\n[instances.main]\nengine = "postgresql"\n'
            f'host = "127.0.0.1"\nport = {port}\nuser = "postgres"\nslot = "{slot}"\n')
    return parse_config(text, root / "pitr.toml").instance("main")


def _insert(port: int, n: int) -> None:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        for _ in range(n):
            conn.execute("INSERT INTO t DEFAULT VALUES")


def test_failover_to_a_new_timeline(work_root) -> None:  # type: ignore[no-untyped-def]
    root = work_root / "timelines"
    root.mkdir()
    old = LocalCluster(root / "old", free_port(), default_bin_dir())
    old.init()
    old.start()
    old_cfg = _config(root, old.port, "pitrflow_old")
    repo = open_repository(parse_config(f'[repository]\npath = "{root / "repo"}"\n',
                                        root / "pitr.toml").repository)
    new_port = free_port()
    try:
        with old.connect() as conn:
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY)")
        take_backup(old_cfg, repo)
        _insert(old.port, 3)
        ship_wal(old_cfg, repo)
        # Fail over: the newest recoverable copy is promoted (timeline 2) and becomes the source.
        plan = plan_restore(read_catalog(repo, "main"), RestoreTarget(None))
        execute_restore(plan, RestoreRequest(old_cfg, root / "new", new_port), repo)
        old.stop()
        new_cfg = _config(root, new_port, "pitrflow_new")
        _insert(new_port, 2)
        ship_wal(new_cfg, repo)
        take_backup(new_cfg, repo)
        _insert(new_port, 1)
        with psycopg.connect(host="127.0.0.1", port=new_port, user="postgres",
                             dbname="postgres") as conn:
            target = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            expected = [int(r[0]) for r in conn.execute("SELECT id FROM t ORDER BY id")]
        _insert(new_port, 1)
        ship_wal(new_cfg, repo)

        catalog = read_catalog(repo, "main")
        assert 2 in catalog.histories and catalog.histories[2][0].parent == 1
        plan = plan_restore(catalog, RestoreTarget(target))
        assert plan.timeline == 2
        port = free_port()
        execute_restore(plan, RestoreRequest(new_cfg, root / "pitr", port), repo)
        assert restored_ids(port, "t") == expected
        assert len(expected) == 6
    finally:
        old.stop()
        for name in ("new", "pitr"):
            data = root / name
            if (data / "postmaster.pid").exists():
                from pitrflow import procs

                procs.run([old.tool("pg_ctl"), "stop", "-D", str(data), "-m", "immediate"],
                          user=old.user, check=False)
