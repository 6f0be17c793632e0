"""`pitr expire --dry-run` and `pitr check --json` for a SQL Server instance, as a user runs them.

Neither starts a flow, so they run as plain processes here; `pitr verify` and a real
`pitr expire` run flows and are tested in tests/flows/test_sqlserver_health_flows.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pitrflow.engines.sqlserver.catalog import import_recorded_rows
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import WEEKLY, closed_port, write_config

F1 = "20240602T011000Z-F-301"


def _pitr(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PITR_TEST_MSSQL_PASSWORD": "not-the-password"}
    return subprocess.run([sys.executable, "-m", "pitrflow.cli", *args], capture_output=True,
                          text=True, check=False, timeout=120, env=env)


def test_expire_dry_run_prints_the_plan_and_deletes_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra="[instances.shop.retention]\nfull_count = 2\n")
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(WEEKLY, repo, "shop")
    before = list(repo.list("shop/"))

    result = _pitr("--config", str(config), "expire", "shop", "--dry-run")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "expire plan for shop (SQL Server)"
    assert f"    DELETE full         {F1}: older than the newest 2 full chains" in lines
    assert "  total: delete 17 backup sets (1 full, 1 differential, 15 log), keep 31" in lines
    assert lines[-1] == "dry run: nothing was deleted"
    assert list(repo.list("shop/")) == before


def test_check_json_reports_every_check_and_the_unreachable_server_in_one_line(
        tmp_path: Path) -> None:
    pyodbc = pytest.importorskip("pyodbc")
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("the FreeTDS ODBC driver is not installed (apt-get install unixodbc tdsodbc)")
    port = closed_port()
    config = write_config(tmp_path, port=port)
    import_recorded_rows(WEEKLY, FsRepository(tmp_path / "repo"), "shop")

    result = _pitr("--config", str(config), "check", "shop", "--json")

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert data["instance"] == "shop" and data["ok"] is False
    checks = {c["name"]: c for c in data["checks"]}
    assert list(checks) == [
        "server", "repository readable", "repository writable", "newest backup",
        "newest log backup", "log chain", "newest passing drill", "backups verified",
        "retention", "backup_dir_worker"]
    assert checks["server"]["ok"] is False and checks["server"]["critical"] is True
    assert checks["server"]["hint"].startswith(
        f"cannot connect to SQL Server 127.0.0.1:{port} for instance shop: ")
    assert "\n" not in checks["server"]["hint"]
    assert checks["log chain"]["ok"] and checks["repository readable"]["ok"]
    assert checks["newest backup"]["ok"] is False  # the recording is from 2024
