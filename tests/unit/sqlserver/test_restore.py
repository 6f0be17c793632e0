"""Restore preparation without a server: names, staging paths, MOVE targets, refusals.

FILELISTONLY rows below have the columns and values SQL Server returns for a
database with two data files, a log and a FILESTREAM container.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.engines.sqlserver.paths import (
    is_windows_path,
    safe_file_stem,
    server_dirname,
    server_join,
)
from pitrflow.engines.sqlserver.restore import (
    StagedFile,
    _stage,
    default_restore_name,
    dry_run_script,
    execute_restore,
    move_targets,
    prepare_restore,
)
from pitrflow.errors import ChecksumMismatchError, RestoreRefusedError
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES, sqlserver_instance

CET = timezone(timedelta(hours=1))
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

FILELIST = [
    {"LogicalName": "Sales", "PhysicalName": "D:\\SQLData\\Sales.mdf", "Type": "D",
     "FileGroupName": "PRIMARY", "FileId": 1},
    {"LogicalName": "Sales_log", "PhysicalName": "L:\\SQLLogs\\Sales_log.ldf", "Type": "L",
     "FileGroupName": None, "FileId": 2},
    {"LogicalName": "Sales_2024", "PhysicalName": "E:\\SQLData\\Sales_2024.ndf", "Type": "D",
     "FileGroupName": "FG2024", "FileId": 3},
    {"LogicalName": "Sales_docs", "PhysicalName": "E:\\SQLData\\Sales_docs", "Type": "S",
     "FileGroupName": "DOCS", "FileId": 65537},
]


def test_moves_name_files_after_the_new_database_in_the_given_directories() -> None:
    moves = move_targets(FILELIST, "Sales 'old' [copy]", "D:\\Restored", "L:\\Restored")
    assert moves == {
        "Sales": "D:\\Restored\\Sales 'old' [copy].mdf",
        "Sales_log": "L:\\Restored\\Sales 'old' [copy]_log.ldf",
        "Sales_2024": "D:\\Restored\\Sales 'old' [copy]_3.ndf",
        "Sales_docs": "D:\\Restored\\Sales 'old' [copy]_fs65537",
    }


def test_moves_fall_back_to_each_file_s_own_directory() -> None:
    moves = move_targets(FILELIST, "x/y:z", None, None)
    assert moves == {
        "Sales": "D:\\SQLData\\x_y_z.mdf",
        "Sales_log": "L:\\SQLLogs\\x_y_z_log.ldf",
        "Sales_2024": "E:\\SQLData\\x_y_z_3.ndf",
        "Sales_docs": "E:\\SQLData\\x_y_z_fs65537",
    }


def test_moves_on_a_linux_server_with_two_logs() -> None:
    filelist = [
        {"LogicalName": "app", "PhysicalName": "/var/opt/mssql/data/app.mdf", "Type": "D",
         "FileId": 1},
        {"LogicalName": "app_log", "PhysicalName": "/var/opt/mssql/data/app_log.ldf",
         "Type": "L", "FileId": 2},
        {"LogicalName": "app_log2", "PhysicalName": "/var/opt/mssql/data/app_log2.ldf",
         "Type": "L", "FileId": 4},
    ]
    assert move_targets(filelist, "app_r", "/var/opt/mssql/data/", None) == {
        "app": "/var/opt/mssql/data/app_r.mdf",
        "app_log": "/var/opt/mssql/data/app_r_log.ldf",
        "app_log2": "/var/opt/mssql/data/app_r_log4.ldf",
    }


def test_server_paths_keep_the_server_s_flavour() -> None:
    assert is_windows_path("D:\\Backups") and is_windows_path("\\\\nas\\sql")
    assert not is_windows_path("/var/opt/mssql/backup")
    assert server_join("\\\\nas\\sql", "a", "b.bak") == "\\\\nas\\sql\\a\\b.bak"
    assert server_join("/var/opt/mssql/backup", "a", "b.bak") == "/var/opt/mssql/backup/a/b.bak"
    assert server_dirname("D:\\SQLData\\Sales.mdf") == "D:\\SQLData"
    assert safe_file_stem(' .. ') == "restored"
    assert safe_file_stem('a<b>c:"d"|e?*') == "a_b_c__d__e__"


def test_default_name_is_stamped_and_fits_sysname() -> None:
    assert default_restore_name("Sales", NOW) == "Sales_restored_20260102T030405Z"
    long_name = default_restore_name("x" * 128, NOW)
    assert len(long_name) == 128 and long_name.endswith("_restored_20260102T030405Z")


def _prepared(repo: FsRepository, worker_dir: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    instance = sqlserver_instance("Sales", worker_dir, server_dir="/var/opt/mssql/backup")
    return prepare_restore(instance, read_sqlserver_catalog(repo, "sales"),
                           datetime(2024, 3, 10, 0, 40, tzinfo=CET), now=NOW,
                           **kwargs)  # type: ignore[arg-type]


def test_prepared_restore_stages_every_planned_file(repo: FsRepository,
                                                   worker_dir: Path) -> None:
    prepared = _prepared(repo, worker_dir)

    assert prepared.new_name == "Sales_restored_20260102T030405Z"
    assert [f.backup_id for f in prepared.files] == [
        "20240309T230312Z-F-2001", "20240309T231502Z-L-2002", "20240309T233001Z-L-2003",
        "20240309T234502Z-L-2004"]
    first = prepared.files[0]
    assert first.key == ("sales/backups/20240309T230312Z-F-2001/"
                         "SQLPROD01_Sales_FULL_20240310_000001.bak")
    assert first.worker_path == (worker_dir / "pitrflow-restore-20260102T030405Z" /
                                 "20240309T230312Z-F-2001" /
                                 "SQLPROD01_Sales_FULL_20240310_000001.bak")
    assert first.server_path == ("/var/opt/mssql/backup/pitrflow-restore-20260102T030405Z/"
                                 "20240309T230312Z-F-2001/SQLPROD01_Sales_FULL_20240310_000001.bak")
    assert prepared.staged_plan.full.files == (first.server_path,)
    assert prepared.plan.full.files == (
        "D:\\SQLBackups\\Sales\\FULL\\SQLPROD01_Sales_FULL_20240310_000001.bak",)


def test_dry_run_script_starts_with_filelistonly_and_replace_is_explicit(
        repo: FsRepository, worker_dir: Path) -> None:
    script = dry_run_script(_prepared(repo, worker_dir, new_name="Sales", replace=True))

    assert script[0].startswith("RESTORE FILELISTONLY FROM DISK = N'/var/opt/mssql/backup/")
    assert script[1].endswith("WITH FILE = 1, NORECOVERY, REPLACE")
    assert script[-1] == "RESTORE DATABASE [Sales] WITH RECOVERY"
    assert len(script) == 6


def test_a_name_sql_server_cannot_hold_is_refused(repo: FsRepository,
                                                  worker_dir: Path) -> None:
    with pytest.raises(RestoreRefusedError, match="cannot restore as 'xxxx"):
        _prepared(repo, worker_dir, new_name="x" * 129)


def test_recorded_rows_never_reach_a_server(repo: FsRepository, worker_dir: Path) -> None:
    prepared = _prepared(repo, worker_dir)
    with pytest.raises(RestoreRefusedError) as caught:
        execute_restore(prepared, repo, sql=None)  # type: ignore[arg-type]
    assert caught.value.message == ("backup 20240309T230312Z-F-2001 was imported from "
                                    "recorded msdb rows and holds no backup data")


def test_staging_checks_every_byte_against_the_manifest(repo: FsRepository,
                                                        worker_dir: Path) -> None:
    prepared = _prepared(repo, worker_dir)
    good = prepared.files[1]
    _stage(repo, good)
    assert good.worker_path.read_bytes() == repo.get_bytes(good.key)

    repo.put_bytes(good.key, b"X" * good.size)  # same size, other bytes
    with pytest.raises(ChecksumMismatchError) as caught:
        _stage(repo, good)
    assert caught.value.message == f"object {good.key} does not match its recorded sha256"

    short = StagedFile(**{**good.__dict__, "size": good.size + 1})
    repo.put_bytes(good.key, b"X" * good.size)
    with pytest.raises(ChecksumMismatchError, match="has 121 bytes, its manifest says 122"):
        _stage(repo, short)
