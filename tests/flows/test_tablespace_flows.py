"""Tablespaces and one-database restores through real Prefect flow runs: the
restore_to_point parameters, and the nightly drill on a cluster with tablespaces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from flows.recovery_drill import recovery_drill
from flows.restore_to_point import restore_to_point
from pitrflow import procs
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.wal.walship import ship_wal
from tests.conftest import TablespaceCluster, free_port
from tests.integration.test_tablespaces import commit_all, ids, locations, make_tables


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and mtime: what a writer would change."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def test_flow_parameters_remap_tablespaces_and_include_one_database(
        ts18: TablespaceCluster, make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(ts18.cluster)
    name = f"only_{env.root.name}"
    env.sql(f"CREATE DATABASE {name} TABLESPACE ts_a")
    env.sql(f"CREATE DATABASE other_{env.root.name}")
    try:
        with ts18.cluster.connect(name) as conn:
            conn.execute("CREATE TABLE t (id int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 40)")
        make_tables(env)
        rows = commit_all(env, 2)
        take_backup(env.instance, env.repo)
        ship_wal(env.instance, env.repo)
        spaces = env.root / "spaces"
        params = {"instance": "main", "config_path": str(env.config_path),
                  "tablespace_map": "ts_a=" + str(spaces / "a"),
                  "tablespace_map_all": str(spaces), "db_include": [name]}
        dry = restore_to_point(pgdata=str(env.root / "dry"), dry_run=True, **params)
        assert dry["dry_run"] and not (env.root / "dry").exists() and not spaces.exists()
        assert {t["name"]: t["directory"] for t in dry["tablespaces"]} == {
            "ts_a": str(spaces / "a"), "ts_b": str(spaces / "ts_b")}
        assert dry["databases_left_out"] == [f"other_{env.root.name}"]
        port = free_port()
        result = restore_to_point(pgdata=str(env.root / "restored"), port=port, **params)
        assert ids(port, "in_a") == rows["in_a"] and ids(port, "in_b") == rows["in_b"]
        assert ids(port, "t", name) == list(range(1, 41))
        assert locations(port) == {"ts_a": str(spaces / "a"), "ts_b": str(spaces / "ts_b")}
        with pytest.raises(psycopg.OperationalError):
            ids(port, "t", f"other_{env.root.name}")
        assert "DROP DATABASE" in result["summary"]
    finally:
        with ts18.cluster.connect() as conn:
            for db in (name, f"other_{env.root.name}"):
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_the_drill_restores_tablespaces_under_its_scratch_area(
        ts18: TablespaceCluster, make_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = make_env(ts18.cluster)
    checks = tmp_path / "checks"
    (checks / "main").mkdir(parents=True)
    (checks / "main" / "public.in_a.json").write_text(json.dumps({
        "name": "team.in_a", "table": "public.in_a",
        "expectations": [{"type": "expect_column_values_to_not_be_null",
                          "kwargs": {"column": "at"}}]}))
    scratch = env.root / "scratch"
    env.config_path.write_text(env.config_path.read_text() + (
        f'\n[instances.main.drill]\nscratch_dir = "{scratch}"\nchecks_dir = "{checks}"\n'))
    make_tables(env)
    commit_all(env, 4)
    take_backup(env.instance, env.repo)
    commit_all(env, 2)
    ship_wal(env.instance, env.repo)
    # Settled on disk before the drill: frozen, so reading the rows sets no hint bits.
    env.sql("VACUUM (FREEZE) in_a, in_b")
    env.sql("CHECKPOINT")
    before = {name: _tree(loc) for name, loc in ts18.locations.items()}

    result = recovery_drill(instance="main", to="latest", keep=True,
                            config_path=str(env.config_path))
    assert result["passed"] is True, result
    assert result["quality_checked"] > 0
    kept = Path(result["kept_at"])
    links = [os.readlink(p) for p in (kept / "pg_tblspc").iterdir()]
    assert len(links) == 2 and all(link.startswith(str(scratch)) for link in links)
    procs.run([ts18.cluster.tool("pg_ctl"), "stop", "-D", str(kept), "-m", "fast", "-w"],
              user=ts18.cluster.user, what="pg_ctl stop")

    result = recovery_drill(instance="main", to="latest", config_path=str(env.config_path))
    assert result["passed"] is True
    assert sorted(p.name for p in scratch.iterdir()) == [kept.name, kept.name + "-tablespaces"]
    # The source's tablespace directories: not one file written, made or removed.
    assert {name: _tree(loc) for name, loc in ts18.locations.items()} == before
