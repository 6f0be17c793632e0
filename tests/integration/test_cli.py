"""The `pitr` command as a user runs it: one clear line for mistakes, real flows for work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.wal.walship import ship_wal
from tests.conftest import Env, free_port, restored_ids

PITR = [sys.executable, "-m", "pitrflow.cli"]


def pitr(*args: str, env_extra: dict[str, str] | None = None,
         home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run([*PITR, *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_config_mistakes_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[repository]\npath = "/tmp/x"\n[instances.main]\nengine = "postgresql"\n'
                   'host = "h"\nprot = 5432\n')
    assert_one_line_error(pitr("--config", str(bad), "info", "main"),
                          "instances.main.prot", str(bad))
    missing = tmp_path / "missing.toml"
    missing.write_text('[repository]\npath = "/tmp/x"\n[instances.main]\nhost = "h"\n')
    assert_one_line_error(pitr("--config", str(missing), "info", "main"),
                          "instances.main.engine")
    result = pitr("info", "main", env_extra={"PITR_CONFIG": ""})
    assert_one_line_error(result, "PITR_CONFIG")
    assert_one_line_error(pitr("--config", str(tmp_path / "nope.toml"), "info", "main"),
                          "does not exist")


def test_restore_input_mistakes_change_nothing(env18: Env) -> None:
    cfg = str(env18.config_path)
    target = env18.root / "new"
    assert_one_line_error(
        pitr("--config", cfg, "restore", "main", "--to", "2026-11-26T09:45:00",
             "--pgdata", str(target)), "no timezone offset")
    assert_one_line_error(
        pitr("--config", cfg, "restore", "main", "--to", "yesterday", "--pgdata", str(target)),
        "not an ISO 8601 time")
    assert_one_line_error(
        pitr("--config", cfg, "restore", "other", "--to", "latest", "--pgdata", str(target)),
        "instance 'other' is not configured")
    assert_one_line_error(
        pitr("--config", cfg, "restore", "main", "--to", "latest", "--pgdata", str(target)),
        "no complete backup")
    assert not target.exists()


def test_user_journey_backup_ship_restore_info(env18: Env, tmp_path: Path) -> None:
    env = env18
    cfg = str(env.config_path)
    home = tmp_path / "prefect-home"
    result = pitr("--config", cfg, "backup", "full", "main", home=home)
    assert result.returncode == 0, result.stderr
    last_id, after = env.commit_row()
    env.commit_row()
    result = pitr("--config", cfg, "ship", "main", home=home)
    assert result.returncode == 0, result.stderr

    info = json.loads(pitr("--config", cfg, "info", "main", "--json").stdout)
    assert [b["type"] for b in info["backups"]] == ["full"]
    backup = info["backups"][0]
    for key in ("id", "type", "start_time", "stop_time", "start_lsn", "stop_lsn", "timeline",
                "size_bytes"):
        assert key in backup
    assert info["wal"]["first"] and info["wal"]["last"]
    assert info["recoverable"]["from"].endswith("+00:00")
    assert info["recoverable"]["to"].endswith("+00:00")

    pgdata = env.root / "cli-restore"
    dry = pitr("--config", cfg, "restore", "main", "--to", after.isoformat(), "--pgdata",
               str(pgdata), "--dry-run", home=home)
    assert dry.returncode == 0, dry.stderr
    assert backup["id"] in dry.stdout and not pgdata.exists()

    port = free_port()
    result = pitr("--config", cfg, "restore", "main", "--to", after.isoformat(), "--pgdata",
                  str(pgdata), "--port", str(port), home=home)
    assert result.returncode == 0, result.stderr
    assert "connect:" in result.stdout and "stop:" in result.stdout
    # The stop hint names a pg_ctl that exists (the embedded wheel's is on no PATH).
    stop = next(line for line in result.stdout.splitlines() if "stop:" in line).split()
    assert Path(stop[stop.index("-D") - 1]).is_file(), stop
    assert restored_ids(port) == list(range(1, last_id + 1))

    again = pitr("--config", cfg, "restore", "main", "--to", "latest", "--pgdata", str(pgdata),
                 home=home)
    assert_one_line_error(again, "not empty")


def test_wal_fetch_serves_verified_segments(env18: Env, tmp_path: Path) -> None:
    env = env18
    take_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    entry = read_catalog(env.repo, "main").wal_entries()[-1]
    dest = tmp_path / "RECOVERYXLOG"
    result = pitr("--config", str(env.config_path), "wal-fetch", "main", entry.segment,
                  str(dest))
    assert result.returncode == 0, result.stderr
    assert dest.stat().st_size == read_catalog(env.repo, "main").segment_size

    missing = pitr("--config", str(env.config_path), "wal-fetch", "main",
                   "0000000100000099000000AA", str(tmp_path / "nope"))
    assert missing.returncode == 1 and not (tmp_path / "nope").exists()

    stored = env.root / "repo" / entry.key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    corrupt = pitr("--config", str(env.config_path), "wal-fetch", "main", entry.segment,
                   str(tmp_path / "bad"))
    # Corruption must stop recovery (status > 125), never look like the end of WAL.
    assert corrupt.returncode == 255
    assert entry.key in corrupt.stderr


@pytest.mark.skipif(shutil.which("runuser") is None, reason="needs runuser")
def test_help_lists_commands() -> None:
    out = pitr("--help").stdout
    for word in ("backup", "ship", "restore", "info", "wal-fetch"):
        assert word in out


def test_drill_cli_fails_loudly_and_info_shows_history(env18: Env, tmp_path: Path) -> None:
    env = env18
    checks = tmp_path / "checks" / "main"
    checks.mkdir(parents=True)
    (checks / "public.items.json").write_text(json.dumps({
        "name": "impossible", "table": "public.items",
        "expectations": [{"type": "expect_table_row_count_to_be_between",
                          "kwargs": {"min_value": 10**9}}]}))
    env.config_path.write_text(env.config_path.read_text() + (
        f'\n[instances.main.drill]\nscratch_dir = "{env.root / "scratch"}"\n'
        f'checks_dir = "{tmp_path / "checks"}"\n'))
    take_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    result = pitr("--config", str(env.config_path), "drill", "main", "--to", "random",
                  home=tmp_path / "prefect-home")
    assert result.returncode == 11, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error [")]
    assert len(errors) == 1 and errors[0].startswith("error [drill-failed]")
    assert "impossible" in errors[0]
    info = pitr("--config", str(env.config_path), "info", "main")
    assert "FAIL" in info.stdout and "drills" in info.stdout


def test_restore_command_line_fetches_a_segment(env18: Env, tmp_path: Path) -> None:
    """The restore_command a non-root worker gets (pitr wal-fetch) works as PostgreSQL runs it."""
    from pitrflow.engines.postgres.restore.executor import RestoreRequest, _restore_command
    from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore

    env = env18
    take_backup(env.instance, env.repo)
    env.commit_row()
    ship_wal(env.instance, env.repo)
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None))
    spool = tmp_path / "spool"
    spool.mkdir()
    request = RestoreRequest(env.instance, tmp_path / "pgdata", config_file=env.config_path)
    command, kind = _restore_command(request, plan, spool, run_as=None)
    assert kind == "pitr wal-fetch"
    wanted = plan.wal[-1].segment
    dest = tmp_path / "RECOVERYXLOG"
    # PostgreSQL substitutes %f and %p and runs the line with /bin/sh.
    line = command.replace("%f", wanted).replace("%p", str(dest))
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert dest.stat().st_size == plan.segment_size
    beyond = subprocess.run(["/bin/sh", "-c", command.replace("%f", "0000000100000099000000AA")
                             .replace("%p", str(tmp_path / "x"))], check=False)
    assert beyond.returncode == 1


def test_restore_delta_through_the_cli(env18: Env, tmp_path: Path) -> None:
    from tests.integration.test_delta import full_restore, stop

    env = env18
    env.commit_row()
    take_backup(env.instance, env.repo)
    ship_wal(env.instance, env.repo)
    copy = full_restore(env, "copy")
    stop(env, copy)
    last_id, _ = env.commit_row()
    take_backup(env.instance, env.repo)
    ship_wal(env.instance, env.repo)
    cfg = str(env.config_path)
    # Without --delta a non-empty directory is refused, with it the copy is brought up to date.
    assert_one_line_error(pitr("--config", cfg, "restore", "main", "--to", "latest", "--pgdata",
                               str(copy.pgdata)), "not empty")
    port = free_port()
    result = pitr("--config", cfg, "restore", "main", "--to", "latest", "--pgdata",
                  str(copy.pgdata), "--port", str(port), "--delta", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    assert restored_ids(port) == list(range(1, last_id + 1))
