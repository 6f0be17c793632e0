"""Clusters with user tablespaces, on real PostgreSQL 18 (and the system 15): backups,
restores to recorded and remapped locations, incremental chains, refusals, one database."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from pitrflow import local
from pitrflow.engines.base import RestoreDestination, RestoreResult, RestoreTarget
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.sysuser import needs_run_as
from pitrflow.errors import RestoreRefusedError, UsageError
from pitrflow.storage.layout import backup_prefix
from tests.conftest import Env, TablespaceCluster, free_port

_names = itertools.count(1)


def make_tables(env: Env) -> None:
    env.sql("DROP TABLE IF EXISTS in_a, in_b")
    env.sql("CREATE TABLE in_a (id bigserial PRIMARY KEY, at timestamptz DEFAULT "
            "clock_timestamp()) TABLESPACE ts_a")
    env.sql("CREATE TABLE in_b (id bigserial PRIMARY KEY, note text) TABLESPACE ts_b")
    env.sql("CREATE INDEX in_a_at ON in_a (at) TABLESPACE ts_b")


def commit(env: Env, table: str) -> tuple[int, datetime]:
    """One row in its own transaction: its id, and a time just after its commit."""
    with env.cluster.connect() as conn:
        row = conn.execute(f"INSERT INTO {table} DEFAULT VALUES RETURNING id").fetchone()
        after = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and after is not None
    return int(row[0]), after[0]


def commit_all(env: Env, n: int) -> dict[str, list[int]]:
    return {t: [commit(env, t)[0] for _ in range(n)] for t in ("in_a", "in_b")}


def ids(port: int, table: str, dbname: str = "postgres") -> list[int]:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname,
                         autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]


def locations(port: int) -> dict[str, str]:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        return {str(n): str(loc) for n, loc in conn.execute(
            "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace "
            "WHERE spcname LIKE 'ts_%'")}


def restore(env: Env, name: str, target: RestoreTarget | None = None,
            **destination: object) -> RestoreResult:
    dest = RestoreDestination(pgdata=str(env.root / name), port=free_port(),
                              **destination)  # type: ignore[arg-type]
    plan = local.plan_restore(env.config, "main", target or RestoreTarget(), dest)
    return local.restore(env.config, plan)


def stop(env: Env, restored: RestoreResult) -> None:
    from pitrflow import procs

    procs.run([env.cluster.tool("pg_ctl"), "stop", "-D", restored.data["pgdata"], "-m", "fast",
               "-w"], user=env.cluster.user, what="pg_ctl stop")


@pytest.fixture
def databases(ts18: TablespaceCluster) -> Iterator[list[str]]:
    """Databases a test creates on a shared cluster, dropped after it."""
    made: list[str] = []
    yield made
    with ts18.cluster.connect() as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_two_tablespaces_restore_remapped_with_exact_rows(ts_pg: TablespaceCluster,
                                                          make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(ts_pg.cluster)
    make_tables(env)
    before = commit_all(env, 3)
    backup = local.backup(env.config, "main", "full")
    manifest = read_catalog(env.repo, "main").backup(backup.backup_id)
    assert manifest is not None and manifest.layout == "bundles"
    recorded = {t["name"]: t["location"] for t in manifest.extra["tablespaces"]}
    assert recorded == {k: str(v) for k, v in ts_pg.locations.items()}
    names = {f.name for f in manifest.files}
    oids = {t["name"]: t["oid"] for t in manifest.extra["tablespaces"]}
    assert any(n.startswith(f"tblspc-{oids['ts_a']}-") for n in names)
    assert any(n.startswith(f"tblspc-{oids['ts_b']}-") for n in names)
    after = commit_all(env, 2)
    local.ship(env.config, "main")

    new_a, others = env.root / "new" / "a", env.root / "others"
    restored = restore(env, "remapped", tablespace_map=(("ts_a", str(new_a)),),
                       tablespace_map_all=str(others))
    port = restored.data["port"]
    for table in ("in_a", "in_b"):
        assert ids(port, table) == before[table] + after[table]
    assert locations(port) == {"ts_a": str(new_a), "ts_b": str(others / "ts_b")}
    pgdata = Path(restored.data["pgdata"])
    assert os.readlink(pgdata / "pg_tblspc" / str(oids["ts_a"])) == str(new_a)
    assert not (pgdata / "tablespace_map").exists()
    if needs_run_as():
        owner = pwd.getpwnam(restored.data["run_as"]).pw_uid
        assert new_a.stat().st_uid == owner and (others / "ts_b").stat().st_uid == owner
    assert "tablespace ts_a" in restored.text and str(new_a) in restored.text
    stop(env, restored)

    report = local.verify(env.config, "main", None)
    assert report.problems == []
    assert report.data["results"][0]["pg_verifybackup"] == "ok"


def test_a_restore_to_the_recorded_locations(ts18: TablespaceCluster, make_env) -> None:  # type: ignore[no-untyped-def]
    """The source's tablespace directories moved away (as on a new host): the restore puts
    them back where they were recorded, and the rows are all there."""
    env = make_env(ts18.cluster)
    make_tables(env)
    rows = commit_all(env, 2)
    local.backup(env.config, "main", "full")
    rows = {t: rows[t] + more for t, more in commit_all(env, 2).items()}
    local.ship(env.config, "main")
    moved = {name: loc.with_name(loc.name + ".away") for name, loc in ts18.locations.items()}
    ts18.cluster.stop()
    try:
        for name, loc in ts18.locations.items():
            loc.rename(moved[name])
        restored = restore(env, "in-place")
        try:
            port = restored.data["port"]
            assert ids(port, "in_a") == rows["in_a"] and ids(port, "in_b") == rows["in_b"]
            assert locations(port) == {k: str(v) for k, v in ts18.locations.items()}
        finally:
            stop(env, restored)
    finally:
        for name, loc in ts18.locations.items():
            if moved[name].exists():
                shutil.rmtree(loc, ignore_errors=True)
                moved[name].rename(loc)
        ts18.cluster.start()


def test_refusals_change_nothing(ts18: TablespaceCluster, make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(ts18.cluster)
    make_tables(env)
    commit_all(env, 1)
    local.backup(env.config, "main", "full")
    local.ship(env.config, "main")
    pgdata = env.root / "refused"
    busy = env.root / "busy"
    busy.mkdir()
    (busy / "keep-me").write_text("x")
    spare = env.root / "spare"

    def plan(**destination: object) -> None:
        local.plan_restore(env.config, "main", RestoreTarget(),
                           RestoreDestination(pgdata=str(pgdata), **destination))  # type: ignore[arg-type]

    with pytest.raises(RestoreRefusedError) as caught:
        plan(tablespace_map=(("ts_a", str(busy)),), tablespace_map_all=str(spare))
    assert f"tablespace directory {busy} (for ts_a) is not empty" in caught.value.message
    with pytest.raises(RestoreRefusedError) as caught:
        plan()  # the source still runs on its recorded locations
    assert "is not empty" in caught.value.message
    assert "recorded location" in (caught.value.hint or "")
    with pytest.raises(UsageError) as caught:
        plan(tablespace_map=(("ts_z", str(spare)),))
    assert "holds no tablespace 'ts_z'" in caught.value.message
    assert "ts_a (OID" in caught.value.message and "ts_b (OID" in caught.value.message
    with pytest.raises(RestoreRefusedError, match="a delta restore rewrites"):
        plan(tablespace_map_all=str(spare), delta=True)
    assert not pgdata.exists() and not spare.exists()
    assert [p.name for p in busy.iterdir()] == ["keep-me"]


def test_an_incremental_chain_with_tablespaces_and_one_database(
        ts18: TablespaceCluster, make_env, databases: list[str]) -> None:  # type: ignore[no-untyped-def]
    env = make_env(ts18.cluster, extra="retention = { full_count = 1 }")
    n = next(_names)
    keep, drop = f"keep_{n}", f"drop_{n}"
    databases += [keep, drop]
    env.sql(f"CREATE DATABASE {keep} TABLESPACE ts_b")
    env.sql(f"CREATE DATABASE {drop}")
    with ts18.cluster.connect(keep) as conn:
        conn.execute("CREATE TABLE k (id int PRIMARY KEY)")
        conn.execute("INSERT INTO k SELECT generate_series(1, 300)")
    with ts18.cluster.connect(drop) as conn:
        conn.execute("CREATE TABLE d (id int) TABLESPACE ts_a")
        conn.execute("INSERT INTO d SELECT generate_series(1, 300)")
    make_tables(env)
    rows = commit_all(env, 2)
    full = local.backup(env.config, "main", "full")
    rows = {t: rows[t] + more for t, more in commit_all(env, 2).items()}
    with ts18.cluster.connect(keep) as conn:
        conn.execute("INSERT INTO k SELECT generate_series(301, 350)")
    incremental = local.backup(env.config, "main", "incremental", False)
    assert incremental.kind == "incremental"
    rows = {t: rows[t] + more for t, more in commit_all(env, 1).items()}
    local.ship(env.config, "main")

    restored = restore(env, "chain", tablespace_map_all=str(env.root / "spaces"),
                       db_include=(keep,))
    assert restored.data["chain"] == [full.backup_id, incremental.backup_id]
    assert restored.data["databases_left_out"] == [drop]
    assert f'DROP DATABASE "{drop}"' in restored.text
    port = restored.data["port"]
    assert ids(port, "in_a") == rows["in_a"] and ids(port, "in_b") == rows["in_b"]
    assert ids(port, "k", keep) == list(range(1, 351))
    with pytest.raises(psycopg.OperationalError):
        ids(port, "d", drop)
    manifest = read_catalog(env.repo, "main").backup(incremental.backup_id)
    assert manifest is not None
    drop_oid = next(d["oid"] for d in manifest.extra["databases"] if d["name"] == drop)
    zeroed = list((env.root / "spaces" / "ts_a").glob(f"*/{drop_oid}/*"))
    zeroed += list((Path(restored.data["pgdata"]) / "base" / str(drop_oid)).iterdir())
    assert any(p.stat().st_size > 0 for p in zeroed)
    assert all(p.read_bytes() == bytes(p.stat().st_size) for p in zeroed)
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {drop}")
        left = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert drop not in left and keep in left
    stop(env, restored)

    # Retention: a new full expires the chain, tablespace objects and all.
    local.backup(env.config, "main", "full")
    for gone in (full.backup_id, incremental.backup_id):
        assert list(env.repo.list(backup_prefix("main", gone))) == []


def test_a_new_user_backs_up_ships_and_restores_to_a_time_remapped(
        ts18: TablespaceCluster, make_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The issue's "done when", through the `pitr` command as a user types it."""
    from tests.integration.test_cli import assert_one_line_error, pitr

    env = make_env(ts18.cluster)
    cfg, home = str(env.config_path), tmp_path / "prefect-home"
    make_tables(env)
    commit_all(env, 2)
    result = pitr("--config", cfg, "backup", "full", "main", home=home)
    assert result.returncode == 0, result.stderr[-3000:]
    by_then = commit_all(env, 2)
    last_a, at = commit(env, "in_a")
    later = commit_all(env, 3)
    result = pitr("--config", cfg, "ship", "main", home=home)
    assert result.returncode == 0, result.stderr[-3000:]

    pgdata, spaces = env.root / "restored", env.root / "spaces"
    assert_one_line_error(pitr("--config", cfg, "restore", "main", "--to", at.isoformat(),
                               "--pgdata", str(pgdata), "--tablespace-map", "ts_q=/x",
                               home=home), "holds no tablespace 'ts_q'", "ts_a (OID")
    assert not pgdata.exists()
    port = free_port()
    result = pitr("--config", cfg, "restore", "main", "--to", at.isoformat(), "--pgdata",
                  str(pgdata), "--port", str(port), "--tablespace-map",
                  f"ts_a={spaces / 'orders'}", "--tablespace-map-all", str(spaces), home=home)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tablespace ts_a (OID" in result.stdout and str(spaces / "orders") in result.stdout
    a, b = ids(port, "in_a"), ids(port, "in_b")
    assert a[-1] == last_a and b == list(range(1, by_then["in_b"][-1] + 1))
    assert a == list(range(1, last_a + 1)) and later["in_a"][0] not in a
    assert locations(port) == {"ts_a": str(spaces / "orders"), "ts_b": str(spaces / "ts_b")}


def test_tablespaces_on_an_encrypted_s3_repository(ts18: TablespaceCluster,
                                                   make_s3_env) -> None:  # type: ignore[no-untyped-def]
    """The staged archives go the same way as any v2 backup: to S3, encrypted, and back."""
    env = make_s3_env(ts18.cluster, repo_extra='[repository.encryption]\n'
                                               'passphrase_env = "PITR_TEST_PASSPHRASE"')
    os.environ["PITR_TEST_PASSPHRASE"] = "tablespaces on s3"
    try:
        make_tables(env)
        rows = commit_all(env, 3)
        backup = local.backup(env.config, "main", "full")
        local.ship(env.config, "main")
        assert backup.data["encryption"] is not None
        restored = restore(env, "from-s3", tablespace_map_all=str(env.root / "spaces"))
        port = restored.data["port"]
        assert ids(port, "in_a") == rows["in_a"] and ids(port, "in_b") == rows["in_b"]
        stop(env, restored)
    finally:
        os.environ.pop("PITR_TEST_PASSPHRASE", None)
