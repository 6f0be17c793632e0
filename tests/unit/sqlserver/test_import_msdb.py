"""`pitr repo import-msdb`: recorded msdb history as planning-only backups."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.engines.sqlserver.errors import MsdbHistoryError, SqlServerPlanError
from pitrflow.engines.sqlserver.record import SOURCE_BACKUP, dump_backup_record, manifest_key
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES
from tests.unit.sqlserver.test_cli_dry_run import _config


def _pitr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitrflow.cli", *args], capture_output=True,
                          text=True, check=False, timeout=120)


def test_import_then_plan_from_the_cli(tmp_path: Path) -> None:
    config = _config(tmp_path)
    imported = _pitr("--config", str(config), "repo", "import-msdb", "sales",
                     str(FIXTURES / "plain_chain.json"))
    assert imported.returncode == 0, imported.stderr
    assert "imported 6 backup sets of sales" in imported.stdout
    catalog = read_sqlserver_catalog(FsRepository(tmp_path / "repo"), "sales")
    assert len(catalog.records) == 6 and not catalog.rejected


@pytest.mark.parametrize("content", ["not json", '{"rows": 3}', "\udcff"])
def test_unreadable_recording_is_one_line(tmp_path: Path, content: str) -> None:
    config = _config(tmp_path)
    recording = tmp_path / "history.json"
    recording.write_bytes(content.encode("utf-8", "surrogateescape"))
    result = _pitr("--config", str(config), "repo", "import-msdb", "sales", str(recording))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "msdb recording" in lines[0], result.stderr
    assert not (tmp_path / "repo" / "sales").exists()


def test_refused_beside_real_backups(tmp_path: Path) -> None:
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    # Turn one imported set into what a real backup's manifest says.
    record = read_sqlserver_catalog(repo, "sales").records[0]
    real = dataclasses.replace(record, source=SOURCE_BACKUP)
    repo.put_bytes(manifest_key("sales", real.kind, real.id), dump_backup_record(real))
    with pytest.raises(SqlServerPlanError, match="already holds 1 real backup"):
        import_recorded_rows(FIXTURES / "missing_log.json", repo, "sales")


def test_rows_without_list_are_refused(tmp_path: Path) -> None:
    recording = tmp_path / "r.json"
    recording.write_text('{"description": "no rows"}')
    with pytest.raises(MsdbHistoryError, match="no list of rows"):
        import_recorded_rows(recording, FsRepository(tmp_path / "repo"), "sales")


def test_empty_recording_is_refused(tmp_path: Path) -> None:
    recording = tmp_path / "r.json"
    recording.write_text("[]")
    with pytest.raises(MsdbHistoryError, match="holds no rows"):
        import_recorded_rows(recording, FsRepository(tmp_path / "repo"), "sales")
