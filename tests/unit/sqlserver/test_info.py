"""`pitr info` for SQL Server: backups with verify status, restorable spans, drills."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pitrflow.drill.record import DrillRecord, store_record
from pitrflow.engines.sqlserver import ops
from pitrflow.engines.sqlserver.catalog import import_recorded_rows
from pitrflow.engines.sqlserver.verify import verify_sqlserver
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES, sqlserver_instance
from tests.unit.sqlserver.test_cli_dry_run import _config


def test_info_shows_only_what_a_restore_can_reach(tmp_path: Path) -> None:
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / "copy_only_full.json", repo, "sales")
    data = ops.sqlserver_info(sqlserver_instance("Inventory", tmp_path), repo)
    spans = data["restorable"]["Inventory"]
    # Last week's full (2024-01-07) has no log backups after it, so no moment of that
    # week can be reached by STOPAT: only this week's chain is restorable.
    assert spans == [{"from": "2024-01-14T01:10:30+00:00", "to": "2024-01-14T04:00:03+00:00"}]
    assert all(b["verify"] is None for b in data["backups"]) and data["drills"] == []


def test_info_after_verify_and_a_drill(tmp_path: Path) -> None:
    config = _config(tmp_path)
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    instance = sqlserver_instance("Sales", tmp_path / "share")
    verify_sqlserver(instance, repo)
    store_record(repo, DrillRecord(instance="sales", started=datetime(2024, 3, 10, 2, tzinfo=UTC),
                                   target_mode="latest", target_time=None, window_from=None,
                                   window_to=None, rto_seconds=12.5, quality_checked=8))
    result = subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config", str(config),
                             "info", "sales"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[verified ok]") == 6
    assert "restorable Sales: 2024-03-09T23:03:12+00:00 .. 2024-03-10T00:00:02+00:00" in (
        result.stdout)
    assert "drills (oldest first):" in result.stdout and "12.5s" in result.stdout


def test_consecutive_full_chains_make_one_span(tmp_path: Path) -> None:
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / "weekly_retention.json", repo, "shop")
    data = ops.sqlserver_info(sqlserver_instance("Shop", tmp_path, name="shop"), repo)
    (span,) = data["restorable"]["Shop"]
    assert span["from"].startswith("2024-06-02") and span["to"] > "2024-06-16"
