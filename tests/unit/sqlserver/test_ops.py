"""The entry points the CLI and flows call, on a repository built from recorded msdb rows.

This is the issue's dry run: ``pitr restore SQLINSTANCE --to TIME --dry-run`` on a
catalog built from recorded rows prints the plan and the T-SQL.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pitrflow.engines.sqlserver import ops
from pitrflow.engines.sqlserver.drill import checkdb_sql, drop_database_sql, scratch_name
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.errors import ConfigError, RestoreRefusedError
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES, sqlserver_instance

CET = timezone(timedelta(hours=1))
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STAGE = "D:\\Backups\\pitrflow\\pitrflow-restore-20260102T030405Z"


def test_dry_run_prints_the_plan_and_the_t_sql(repo: FsRepository, worker_dir: Path) -> None:
    ops.sqlserver_import_recorded(FIXTURES / "plain_chain.json", repo, "sales")
    instance = sqlserver_instance("Sales", worker_dir)

    text, statements = ops.sqlserver_plan_text(
        instance, repo, datetime(2024, 3, 10, 0, 40, 0, 250999, CET), now=NOW)

    db = "[Sales_restored_20260102T030405Z]"
    full = f"{STAGE}\\20240309T230312Z-F-2001\\SQLPROD01_Sales_FULL_20240310_000001.bak"
    logs = [f"{STAGE}\\20240309T231502Z-L-2002\\SQLPROD01_Sales_LOG_20240310_001500.trn",
            f"{STAGE}\\20240309T233001Z-L-2003\\SQLPROD01_Sales_LOG_20240310_003000.trn",
            f"{STAGE}\\20240309T234502Z-L-2004\\SQLPROD01_Sales_LOG_20240310_004500.trn"]
    stopat = "STOPAT = '2024-03-10T00:40:00.250'"
    assert statements == [
        f"RESTORE FILELISTONLY FROM DISK = N'{full}' WITH FILE = 1",
        f"RESTORE DATABASE {db} FROM DISK = N'{full}' WITH FILE = 1, NORECOVERY",
        *[f"RESTORE LOG {db} FROM DISK = N'{log}' WITH FILE = 1, NORECOVERY, {stopat}"
          for log in logs],
        f"RESTORE DATABASE {db} WITH RECOVERY",
    ]
    lines = text.splitlines()
    assert lines[0] == ("SQL Server restore of Sales (instance sales) to "
                        "2024-03-09 23:40:00.250 UTC")
    assert lines[1] == "  restore as   Sales_restored_20260102T030405Z (a new database)"
    assert lines[2] == "  STOPAT       '2024-03-10T00:40:00.250' (server local time, UTC+01:00)"
    steps = [line.split()[:5] for line in lines if line.startswith("     ")][:4]
    assert steps == [
        ["1.", "full", "backup", "set", "2001"], ["2.", "log", "backup", "set", "2002"],
        ["3.", "log", "backup", "set", "2003"], ["4.", "log", "backup", "set", "2004"]]
    assert "    - log backups 2002, 2003, 2004: unbroken LSN chain from 41000000123200001 " \
           "to 42000000044800001" in lines
    assert "  note         imported from recorded msdb rows: a plan and dry run only" in lines
    tsql = lines[lines.index("T-SQL") + 1:]
    assert tsql == [f"  {statement};" for statement in statements]


def test_dry_run_to_the_latest_uses_every_log_and_no_stopat(repo: FsRepository,
                                                            worker_dir: Path) -> None:
    ops.sqlserver_import_recorded(FIXTURES / "plain_chain.json", repo, "sales")
    text, statements = ops.sqlserver_plan_text(sqlserver_instance("Sales", worker_dir), repo,
                                               None, new_name="Sales_copy", now=NOW)

    assert text.splitlines()[0] == ("SQL Server restore of Sales (instance sales) to the "
                                    "latest recorded log")
    assert sum(s.startswith("RESTORE LOG [Sales_copy]") for s in statements) == 4
    assert not any("STOPAT" in s for s in statements)


def test_dry_run_with_a_differential(repo: FsRepository, worker_dir: Path) -> None:
    ops.sqlserver_import_recorded(FIXTURES / "copy_only_full.json", repo, "inv")
    database = json_database("copy_only_full.json")
    instance = sqlserver_instance(database, worker_dir, name="inv",
                                  server_dir="/var/opt/mssql/backup")

    text, statements = ops.sqlserver_plan_text(instance, repo, None, now=NOW)

    kinds = [line.split()[1] for line in text.splitlines() if line.startswith("     ")][:3]
    assert kinds == ["full", "differential", "log"]
    assert statements[2].startswith(f"RESTORE DATABASE [{database}_restored_20260102T030405Z]"
                                    " FROM DISK = N'/var/opt/mssql/backup/pitrflow-restore-")
    assert statements[2].endswith("WITH FILE = 1, NORECOVERY")
    assert "copy-only full 3004 skipped: a copy-only backup is no differential base" in text


def test_a_missing_log_is_refused_through_the_entry_point(repo: FsRepository,
                                                          worker_dir: Path) -> None:
    ops.sqlserver_import_recorded(FIXTURES / "missing_log.json", repo, "x")
    database = json_database("missing_log.json")
    with pytest.raises(SqlServerPlanError) as caught:
        ops.sqlserver_plan_text(sqlserver_instance(database, worker_dir, name="x"), repo,
                                None, now=NOW)
    assert caught.value.message.startswith("log chain broken between LSN ")
    assert isinstance(caught.value, RestoreRefusedError)
    assert caught.value.one_line().startswith("error [restore-refused]: log chain broken")


def test_info_lists_backups_and_rejections(repo: FsRepository, worker_dir: Path) -> None:
    ops.sqlserver_import_recorded(FIXTURES / "plain_chain.json", repo, "sales")
    repo.delete("sales/logs/20240310T000002Z-L-2005/manifest.json")

    info = ops.sqlserver_info(sqlserver_instance("Sales", worker_dir), repo)

    assert [b["backup_set_id"] for b in info["backups"]] == [2000, 2001, 2002, 2003, 2004]
    assert info["rejected"] == [{"id": "20240310T000002Z-L-2005",
                                 "reason": "no manifest (incomplete or interrupted backup)"}]


def test_postgresql_instances_are_turned_away(repo: FsRepository, worker_dir: Path) -> None:
    instance = dataclasses.replace(sqlserver_instance("Sales", worker_dir), engine="postgresql")
    with pytest.raises(ConfigError, match="has engine postgresql, not sqlserver"):
        ops.sqlserver_plan_text(instance, repo, None)


def test_missing_recording_is_one_line(repo: FsRepository) -> None:
    with pytest.raises(SqlServerPlanError, match="msdb recording /nope.json does not exist"):
        ops.sqlserver_import_recorded("/nope.json", repo, "sales")


def test_drill_statements_quote_the_scratch_name() -> None:
    name = scratch_name("Sales ]x", NOW)
    assert name == "Sales ]x_drill_20260102T030405Z"
    assert checkdb_sql(name) == (
        "DBCC CHECKDB ([Sales ]]x_drill_20260102T030405Z]) WITH NO_INFOMSGS, ALL_ERRORMSGS")
    assert drop_database_sql(name) == [
        "ALTER DATABASE [Sales ]]x_drill_20260102T030405Z] SET SINGLE_USER WITH ROLLBACK "
        "IMMEDIATE",
        "DROP DATABASE [Sales ]]x_drill_20260102T030405Z]",
    ]


def json_database(fixture: str) -> str:
    rows = json.loads((FIXTURES / fixture).read_text())["rows"]
    return str(rows[0]["database_name"])
