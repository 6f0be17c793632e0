"""Recovery targets a DBA reaches for, as the CLI restores to them, on real PostgreSQL.

A transaction id (inclusive and exclusive), a log position, a named restore
point created with `pitr mark`, the end of the backup (immediate), and a
standby that keeps following its primary.  Each lands exactly: the target's
rows are there (or, exclusive, just not), none after.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from tests.conftest import Env, free_port, restored_ids
from tests.integration.test_cli import assert_one_line_error, pitr


def _commit(env: Env) -> tuple[int, int, str]:
    """One row in its own transaction: its id, its transaction id, the LSN after it."""
    with env.cluster.connect() as conn:
        with conn.transaction():
            row = conn.execute("INSERT INTO items(note) VALUES ('x') "
                               "RETURNING id, pg_current_xact_id()::text::bigint").fetchone()
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None and lsn is not None
    return int(row[0]), int(row[1]), str(lsn[0])


def _restore(env: Env, name: str, *target: str) -> list[int]:
    port = free_port()
    result = pitr("--config", str(env.config_path), "restore", "main", *target,
                  "--pgdata", str(env.root / name), "--port", str(port))
    assert result.returncode == 0, result.stderr
    return restored_ids(port)


@pytest.fixture
def history(env: Env) -> dict[str, object]:
    """A full backup, then rows, a named point and more rows, all shipped."""
    cfg = str(env.config_path)
    before = [_commit(env)[0] for _ in range(2)]
    assert pitr("--config", cfg, "backup", "full", "main").returncode == 0
    rows = [_commit(env) for _ in range(3)]
    marked = pitr("--config", cfg, "mark", "main", "--name", "before deploy")
    assert marked.returncode == 0, marked.stderr
    assert "restore point 'before deploy' of main created" in marked.stdout
    after = [_commit(env) for _ in range(3)]
    assert pitr("--config", cfg, "ship", "main").returncode == 0
    return {"before": before, "rows": rows, "after": after}


def test_xid_targets_inclusive_and_exclusive(env: Env, history: dict[str, object]) -> None:
    rows = history["rows"]
    assert isinstance(rows, list)
    target_id, target_xid, _ = rows[1]
    got = _restore(env, "xid", "--target-xid", str(target_xid))
    assert got == list(range(1, target_id + 1))
    got = _restore(env, "xid-exclusive", "--target-xid", str(target_xid), "--exclusive")
    assert got == list(range(1, target_id))


def test_lsn_target(env: Env, history: dict[str, object]) -> None:
    after = history["after"]
    assert isinstance(after, list)
    target_id, _, lsn = after[0]
    assert _restore(env, "lsn", "--target-lsn", lsn) == list(range(1, target_id + 1))


def test_named_restore_point(env: Env, history: dict[str, object]) -> None:
    rows = history["rows"]
    assert isinstance(rows, list)
    info = pitr("--config", str(env.config_path), "info", "main")
    assert "restore points" in info.stdout and "before deploy" in info.stdout
    got = _restore(env, "named", "--target-name", "before deploy")
    assert got == list(range(1, rows[-1][0] + 1))
    again = pitr("--config", str(env.config_path), "mark", "main", "--name", "before deploy")
    assert_one_line_error(again, "restore point 'before deploy' of main already exists")


def test_immediate_stops_at_the_end_of_the_backup(env: Env,
                                                  history: dict[str, object]) -> None:
    assert _restore(env, "immediate", "--immediate") == history["before"]


def test_unreachable_targets_are_refused_changing_nothing(env: Env,
                                                         history: dict[str, object]) -> None:
    cfg = str(env.config_path)
    listing = sorted(i.key for i in env.repo.list("main/"))
    pgdata = env.root / "refused"
    unknown = pitr("--config", cfg, "restore", "main", "--target-name", "no such point",
                   "--pgdata", str(pgdata))
    assert_one_line_error(unknown, "restore point 'no such point' of main was never recorded",
                          "before deploy")
    early = pitr("--config", cfg, "restore", "main", "--target-lsn", "0/10",
                 "--pgdata", str(pgdata))
    assert_one_line_error(early, "LSN 0/10 is before the earliest recoverable point")
    late = pitr("--config", cfg, "restore", "main", "--target-lsn", "FF/0",
                "--pgdata", str(pgdata))
    assert_one_line_error(late, "after the newest shipped WAL mark")
    two = pitr("--config", cfg, "restore", "main", "--to", "latest", "--immediate",
               "--pgdata", str(pgdata))
    assert_one_line_error(two, "a restore has one target")
    bad = pitr("--config", cfg, "restore", "main", "--target-lsn", "zz",
               "--pgdata", str(pgdata))
    assert_one_line_error(bad, "is not a PostgreSQL LSN")
    assert not pgdata.exists()
    assert sorted(i.key for i in env.repo.list("main/")) == listing


def test_standby_streams_from_its_primary(env18: Env) -> None:
    env = env18
    cfg = str(env.config_path)
    for _ in range(2):
        _commit(env)
    assert pitr("--config", cfg, "backup", "full", "main").returncode == 0
    assert pitr("--config", cfg, "ship", "main").returncode == 0
    port = free_port()
    result = pitr("--config", cfg, "restore", "main", "--to", "latest", "--standby",
                  "--pgdata", str(env.root / "standby"), "--port", str(port))
    assert result.returncode == 0, result.stderr
    assert "running as a standby" in result.stdout
    new_id = _commit(env)[0]
    deadline = time.monotonic() + 60
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        while new_id not in [r[0] for r in conn.execute("SELECT id FROM items")]:
            assert time.monotonic() < deadline, "the standby never received the new row"
            time.sleep(0.2)
        sender = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
    assert sender == ("streaming",)
    assert read_catalog(env.repo, "main").backups  # the standby changed nothing of the repo
