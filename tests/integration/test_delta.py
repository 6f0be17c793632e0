"""Delta restore against real PostgreSQL: exact rows after changes, a dropped table and a
stray file; a run killed midway and run again; refusals that change nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pitrflow import procs
from pitrflow.devtools.localpg import LocalCluster
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.bundles.fetchplan import PG_CONTROL
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.restore.delta import MARKER
from pitrflow.engines.postgres.restore.executor import (
    RestoreOutcome,
    RestoreRequest,
    execute_restore,
)
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import RestoreRefusedError
from tests.conftest import Env, free_port, restored_ids
from tests.integration.test_bundles_pg import SMALL_FRAMES, blob_sum, make_blob
from tests.v1_writer import take_v1_stream_backup


def delta_restore(env: Env, pgdata: Path, trust_mtime: bool = False) -> RestoreOutcome:
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None))
    request = RestoreRequest(env.instance, pgdata, free_port(), config_file=env.config_path,
                             delta=True, delta_trust_mtime=trust_mtime)
    return execute_restore(plan, request, env.repo)


def full_restore(env: Env, name: str) -> RestoreOutcome:
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None))
    request = RestoreRequest(env.instance, env.root / name, free_port(),
                             config_file=env.config_path)
    return execute_restore(plan, request, env.repo)


def stop(env: Env, outcome: RestoreOutcome) -> None:
    procs.run([env.cluster.tool("pg_ctl"), "stop", "-D", str(outcome.pgdata), "-m", "fast",
               "-w"], user=outcome.run_as, what="pg_ctl")


def tree(path: Path) -> dict[str, str]:
    """Every path under `path` with what it holds (hash, link target or 'dir')."""
    found = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        if p.is_symlink():
            found[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            found[rel] = "dir"
        elif not p.is_file():
            found[rel] = "special"  # the running server's socket
        else:
            found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def rows(port: int, table: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def restored_then_changed(env: Env) -> tuple[Path, RestoreOutcome, str]:
    """A restored copy, stopped; then the source moves on and a new backup is taken."""
    env.sql("DROP TABLE IF EXISTS accounts, doomed")
    env.sql("CREATE TABLE accounts AS SELECT g AS id, g * 10 AS balance, md5(g::text) AS note "
            "FROM generate_series(1, 20000) g")
    env.sql("CREATE TABLE doomed AS SELECT g FROM generate_series(1, 1000) g")
    make_blob(env, 2)
    env.commit_row()
    take_backup(env.instance, env.repo)
    ship_wal(env.instance, env.repo)
    old = full_restore(env, "copy")
    stop(env, old)
    # About 5% of the rows change, a table goes, rows arrive; a new backup is taken.
    doomed = str(env.sql("SELECT pg_relation_filepath('doomed')")[0][0])
    assert (old.pgdata / doomed).is_file()
    env.sql("UPDATE accounts SET balance = balance + 1 WHERE id %% 20 = 0")
    env.sql("DROP TABLE doomed")
    env.sql("DELETE FROM blob WHERE g = 1")  # its TOAST file changes in its first frame only
    env.sql("INSERT INTO accounts SELECT g, 0, 'new' FROM generate_series(20001, 20500) g")
    take_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    return old.pgdata, old, doomed


@pytest.mark.parametrize("trust_mtime", [False, True], ids=["checksums", "mtime"])
def test_delta_restore_is_exact_and_removes_what_the_backup_lacks(
        pg18, make_env, trust_mtime: bool) -> None:
    env: Env = make_env(pg18, repo_extra=SMALL_FRAMES)
    pgdata, _, doomed = restored_then_changed(env)
    (pgdata / "base" / "stray_file").write_bytes(b"not PostgreSQL's")
    (pgdata / "stray_dir").mkdir()
    (pgdata / "stray_dir" / "inside").write_text("x")

    outcome = delta_restore(env, pgdata, trust_mtime)
    assert outcome.phases["delta_compare"] >= 0 and "fetch" in outcome.phases
    assert outcome.delta is not None and outcome.delta["kept"] > 100
    assert outcome.delta["patched"] >= 1, outcome.delta
    # Fetched: the changed tables and catalogs, and the backup's own WAL segment (16 MiB).
    backup = read_catalog(env.repo, "main").backups[-1]
    assert outcome.delta["bytes_fetched"] < backup.database_size_bytes - 4 * 1024 * 1024
    assert rows(outcome.port, "accounts") == rows(env.cluster.port, "accounts")
    assert restored_ids(outcome.port) == [r[0] for r in env.sql("SELECT id FROM items ORDER BY 1")]
    assert blob_sum(outcome.port) == blob_sum(env.cluster.port)
    with pytest.raises(Exception, match="doomed"):
        rows(outcome.port, "doomed")
    assert not (pgdata / doomed).exists()
    assert not (pgdata / "base" / "stray_file").exists()
    assert not (pgdata / "stray_dir").exists()
    assert not (pgdata / MARKER).exists()


def test_a_killed_delta_restore_cannot_start_and_a_rerun_ends_exact(pg18, make_env) -> None:
    env: Env = make_env(pg18, repo_extra=SMALL_FRAMES)
    pgdata, _, _ = restored_then_changed(env)
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pitrflow.config import load_config
        from pitrflow.storage import open_repository
        from pitrflow.progress import progress_sink
        from pitrflow.engines.postgres.catalog.snapshot import read_catalog
        from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
        from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore

        config = load_config({str(env.config_path)!r})
        repo = open_repository(config.repository)
        plan = plan_restore(read_catalog(repo, "main"), RestoreTarget(None))
        request = RestoreRequest(config.instance("main"), Path({str(pgdata)!r}), {free_port()},
                                 delta=True)

        def kill_once_writing(state):
            if state.what.startswith("restore") and state.done > 0 and not state.finished:
                os.kill(os.getpid(), signal.SIGKILL)

        with progress_sink(kill_once_writing):
            execute_restore(plan, request, repo)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (pgdata / MARKER).exists() and not (pgdata / PG_CONTROL).exists()
    start = procs.run([env.cluster.tool("pg_ctl"), "start", "-D", str(pgdata), "-w", "-t", "10",
                       "-o", f"-p {free_port()}"], user=env.cluster.user, check=False,
                      what="pg_ctl")
    assert start.returncode != 0, "a half-done delta restore must not start"

    outcome = delta_restore(env, pgdata)
    assert rows(outcome.port, "accounts") == rows(env.cluster.port, "accounts")
    assert blob_sum(outcome.port) == blob_sum(env.cluster.port)
    assert not (pgdata / MARKER).exists()


def test_refusals_change_nothing(pg18, make_env, work_root: Path) -> None:
    env: Env = make_env(pg18)
    pgdata, copy, _ = restored_then_changed(env)

    def refused(target: Path, why: str, prepare=None) -> None:  # noqa: ANN001
        before = tree(target) if target.exists() else None
        with pytest.raises(RestoreRefusedError, match=why) as caught:
            delta_restore(env, target)
        assert "\n" not in caught.value.one_line()
        assert (tree(target) if target.exists() else None) == before

    # A server running on it.
    procs.run([env.cluster.tool("pg_ctl"), "start", "-D", str(pgdata), "-w", "-o",
               f"-p {free_port()}"], user=copy.run_as, what="pg_ctl")
    try:
        refused(pgdata, "a server is running on")
    finally:
        stop(env, copy)
    # Another cluster's data directory.
    other = LocalCluster(env.root / "other", free_port(), env.cluster.bin_dir)
    other.init()
    refused(other.data_dir, "belongs to another cluster")
    # Not a data directory, and no directory at all.
    plain = env.root / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    refused(plain, "not a PostgreSQL data directory")
    refused(env.root / "absent", "is not a directory")
    # A v1 backup has no file index to compare against.
    take_v1_stream_backup(env.instance, env.repo)
    ship_wal(env.instance, env.repo)
    refused(pgdata, "single-stream")
