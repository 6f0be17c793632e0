"""Golden T-SQL text: names with ``]``, quotes and spaces must stay inside their quotes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.sqlserver.catalog import marks_by_log
from pitrflow.engines.sqlserver.msdb import marks_from_json, rows_from_json
from pitrflow.engines.sqlserver.planner import plan_restore, plan_restore_to
from pitrflow.engines.sqlserver.tsql import (
    backup_database_sql,
    backup_log_sql,
    format_stopat,
    quote_name,
    quote_string,
    restore_filelistonly_sql,
    restore_script,
    stop_option,
)

FIXTURES = Path(__file__).parent / "fixtures"
AWKWARD_DB = "Sales ]Restored' 2"
AWKWARD_MOVES = {
    "Inventory": "E:\\Data\\O'Brien ]Restore\\Inventory.mdf",
    "Inventory log": "F:\\Logs\\Inventory [old]_log.ldf",
}


# --- quoting ---


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("Sales", "[Sales]"),
        ("Sales DB", "[Sales DB]"),
        ("a]b", "[a]]b]"),
        ("]]", "[]]]]]"),
        ("O'Brien", "[O'Brien]"),
        ("[x]", "[[x]]]"),
    ],
)
def test_quote_name_doubles_closing_brackets(name: str, quoted: str) -> None:
    assert quote_name(name) == quoted


@pytest.mark.parametrize("name", ["", "x" * 129, "a\x00b"])
def test_quote_name_refuses_what_quotename_would_null(name: str) -> None:
    with pytest.raises(ValueError):
        quote_name(name)


def test_quote_name_accepts_the_longest_sysname() -> None:
    assert quote_name("x" * 128) == "[" + "x" * 128 + "]"


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("C:\\backups\\a.bak", "N'C:\\backups\\a.bak'"),
        ("it's", "N'it''s'"),
        ("''", "N''''''"),
        ("a]b [c]", "N'a]b [c]'"),
        ("Zürich", "N'Zürich'"),
    ],
)
def test_quote_string_doubles_single_quotes(text: str, quoted: str) -> None:
    assert quote_string(text) == quoted


def test_quote_string_refuses_nul() -> None:
    with pytest.raises(ValueError):
        quote_string("a\x00b")


# --- backup statements ---


def test_backup_database_sql_defaults() -> None:
    assert backup_database_sql("Sales", "D:\\b\\Sales_FULL.bak") == (
        "BACKUP DATABASE [Sales] TO DISK = N'D:\\b\\Sales_FULL.bak' "
        "WITH COMPRESSION, CHECKSUM, STATS = 10"
    )


def test_backup_database_sql_differential_striped_with_awkward_names() -> None:
    sql = backup_database_sql(
        "My ]DB'", ["D:\\b\\it's 1.bak", "E:\\b\\it's 2.bak"], differential=True, stats=5
    )

    assert sql == (
        "BACKUP DATABASE [My ]]DB'] TO DISK = N'D:\\b\\it''s 1.bak', "
        "DISK = N'E:\\b\\it''s 2.bak' WITH DIFFERENTIAL, COMPRESSION, CHECKSUM, STATS = 5"
    )


def test_backup_database_sql_spells_out_disabled_options() -> None:
    sql = backup_database_sql("Sales", "x.bak", compression=False, checksum=False, stats=None)

    assert sql == "BACKUP DATABASE [Sales] TO DISK = N'x.bak' WITH NO_COMPRESSION, NO_CHECKSUM"


def test_backup_log_sql() -> None:
    assert backup_log_sql("Sales DB", "L:\\logs\\Sales DB_LOG.trn") == (
        "BACKUP LOG [Sales DB] TO DISK = N'L:\\logs\\Sales DB_LOG.trn' "
        "WITH COMPRESSION, CHECKSUM, STATS = 10"
    )


@pytest.mark.parametrize("stats", [0, 101])
def test_backup_refuses_stats_outside_a_percentage(stats: int) -> None:
    with pytest.raises(ValueError):
        backup_log_sql("Sales", "x.trn", stats=stats)


def test_backup_refuses_no_path() -> None:
    with pytest.raises(ValueError):
        backup_database_sql("Sales", [])


def test_restore_filelistonly_sql() -> None:
    assert restore_filelistonly_sql("D:\\b\\O'Brien.bak") == (
        "RESTORE FILELISTONLY FROM DISK = N'D:\\b\\O''Brien.bak' WITH FILE = 1"
    )
    assert restore_filelistonly_sql(["a.bak", "b.bak"], position=3) == (
        "RESTORE FILELISTONLY FROM DISK = N'a.bak', DISK = N'b.bak' WITH FILE = 3"
    )


def test_format_stopat_keeps_milliseconds() -> None:
    assert format_stopat(datetime(2024, 3, 10, 0, 40, 0, 250999)) == "2024-03-10T00:40:00.250"
    assert format_stopat(datetime(2024, 3, 10, 0, 40)) == "2024-03-10T00:40:00.000"


def test_format_stopat_refuses_aware_times() -> None:
    with pytest.raises(ValueError):
        format_stopat(datetime(2024, 3, 10, tzinfo=UTC))


# --- restore scripts ---

INVENTORY = "D:\\SQLBackups\\Inventory"


def test_restore_script_full_differential_logs_with_awkward_names() -> None:
    plan = plan_restore(
        rows_from_json(FIXTURES / "copy_only_full.json"),
        datetime(2024, 1, 14, 3, 45, 12, 345678, tzinfo=UTC),
    )

    statements = restore_script(plan, AWKWARD_DB, AWKWARD_MOVES)

    db = "[Sales ]]Restored' 2]"
    stopat = "STOPAT = '2024-01-14T03:45:12.345'"
    assert statements == [
        f"RESTORE DATABASE {db} FROM DISK = N'{INVENTORY}\\FULL\\"
        "SQLPROD01_Inventory_FULL_20240114_010000.bak' WITH FILE = 1, NORECOVERY, "
        "MOVE N'Inventory' TO N'E:\\Data\\O''Brien ]Restore\\Inventory.mdf', "
        "MOVE N'Inventory log' TO N'F:\\Logs\\Inventory [old]_log.ldf'",
        f"RESTORE DATABASE {db} FROM DISK = N'{INVENTORY}\\DIFF\\"
        "SQLPROD01_Inventory_DIFF_20240114_030000.bak' WITH FILE = 1, NORECOVERY",
        f"RESTORE LOG {db} FROM DISK = N'{INVENTORY}\\LOG\\"
        f"SQLPROD01_Inventory_LOG_20240114_033000.trn' WITH FILE = 1, NORECOVERY, {stopat}",
        f"RESTORE LOG {db} FROM DISK = N'{INVENTORY}\\LOG\\"
        f"SQLPROD01_Inventory_LOG_20240114_040000.trn' WITH FILE = 1, NORECOVERY, {stopat}",
        f"RESTORE DATABASE {db} WITH RECOVERY",
    ]


def test_restore_script_stopat_is_server_local_time() -> None:
    plan = plan_restore(
        rows_from_json(FIXTURES / "plain_chain.json"),
        datetime(2024, 3, 10, 0, 40, tzinfo=timezone(timedelta(hours=1))),
    )

    statements = restore_script(plan, "Sales_pitr", {})

    assert len(statements) == 5
    assert all(s.endswith("STOPAT = '2024-03-10T00:40:00.000'") for s in statements[1:4])
    assert statements[0].endswith("WITH FILE = 1, NORECOVERY")


def test_restore_script_striped_to_latest_with_replace_and_positions() -> None:
    history = [
        dataclasses.replace(row, position=3) if row.backup_set_id == 8002 else row
        for row in rows_from_json(FIXTURES / "striped_mirror.json")
    ]
    plan = plan_restore(history, None)

    statements = restore_script(
        plan, "Warehouse", {"Warehouse": "D:\\Data\\Warehouse.mdf"}, replace=True
    )

    full = "D:\\SQLBackups\\Warehouse\\FULL\\SQLPROD01_Warehouse_FULL_20240421_220000"
    logs = "D:\\SQLBackups\\Warehouse\\LOG\\SQLPROD01_Warehouse_LOG_20240421"
    assert statements == [
        f"RESTORE DATABASE [Warehouse] FROM DISK = N'{full}_1.bak', DISK = N'{full}_2.bak', "
        f"DISK = N'{full}_3.bak' WITH FILE = 1, NORECOVERY, "
        "MOVE N'Warehouse' TO N'D:\\Data\\Warehouse.mdf', REPLACE",
        f"RESTORE LOG [Warehouse] FROM DISK = N'{logs}_230000.trn' WITH FILE = 3, NORECOVERY",
        f"RESTORE LOG [Warehouse] FROM DISK = N'{logs}_233000.trn' WITH FILE = 1, NORECOVERY",
        "RESTORE DATABASE [Warehouse] WITH RECOVERY",
    ]


def test_restore_script_refuses_empty_move() -> None:
    plan = plan_restore(rows_from_json(FIXTURES / "plain_chain.json"), None)

    with pytest.raises(ValueError):
        restore_script(plan, "Sales_pitr", {"Sales": ""})


# --- restore scripts to an LSN, a marked transaction, the end of the backups ---

SALES_FULL = "D:\\SQLBackups\\Sales\\FULL\\SQLPROD01_Sales_FULL_20240310_000001.bak"
SALES_LOGS = [f"D:\\SQLBackups\\Sales\\LOG\\SQLPROD01_Sales_LOG_20240310_{hhmm}00.trn"
              for hhmm in ("0015", "0030", "0045", "0100")]


def _marked_script(target: RestoreTarget, db: str = "Sales_pitr") -> list[str]:
    path = FIXTURES / "marked_chain.json"
    history = rows_from_json(path)
    plan = plan_restore_to(history, target, marks_by_log(history, marks_from_json(path)))
    return restore_script(plan, db, {})


def _golden(db: str, logs: int, stop: str | None) -> list[str]:
    option = "" if stop is None else f", {stop}"
    return [
        f"RESTORE DATABASE {db} FROM DISK = N'{SALES_FULL}' WITH FILE = 1, NORECOVERY",
        *[f"RESTORE LOG {db} FROM DISK = N'{log}' WITH FILE = 1, NORECOVERY{option}"
          for log in SALES_LOGS[:logs]],
        f"RESTORE DATABASE {db} WITH RECOVERY",
    ]


def test_restore_script_to_an_lsn_inside_a_log() -> None:
    assert _marked_script(RestoreTarget(lsn="42000000020000012")) == _golden(
        "[Sales_pitr]", 3, "STOPATMARK = 'lsn:42000000020000012'")


def test_restore_script_to_an_lsn_at_a_log_boundary_just_before_it() -> None:
    assert _marked_script(RestoreTarget(lsn="42000000007200001", exclusive=True)) == _golden(
        "[Sales_pitr]", 3, "STOPBEFOREMARK = 'lsn:42000000007200001'")


def test_restore_script_to_an_lsn_given_in_fn_dblog_form_writes_the_decimal() -> None:
    # VLF 0x2a = 42, block 0xc8 = 200, slot 0xc = 12: 42 0000000200 00012
    assert _marked_script(RestoreTarget(lsn="0000002a:000000c8:000c")) == _golden(
        "[Sales_pitr]", 3, "STOPATMARK = 'lsn:42000000020000012'")


def test_restore_script_to_a_mark() -> None:
    assert _marked_script(RestoreTarget(name="deploy"), AWKWARD_DB) == _golden(
        "[Sales ]]Restored' 2]", 1, "STOPATMARK = N'deploy'")


def test_restore_script_to_just_before_a_mark() -> None:
    assert _marked_script(RestoreTarget(name="deploy", exclusive=True)) == _golden(
        "[Sales_pitr]", 1, "STOPBEFOREMARK = N'deploy'")


def test_restore_script_to_a_reused_mark_name_adds_after_its_commit_time() -> None:
    assert _marked_script(RestoreTarget(name="release")) == _golden(
        "[Sales_pitr]", 4, "STOPATMARK = N'release' AFTER '2024-03-10T00:50:00.003'")


def test_restore_script_immediate_restores_the_full_and_recovers() -> None:
    assert _marked_script(RestoreTarget(immediate=True)) == _golden("[Sales_pitr]", 0, None)


def test_a_mark_name_with_a_quote_stays_inside_its_literal() -> None:
    path = FIXTURES / "marked_chain.json"
    history = rows_from_json(path)
    quoted = [dataclasses.replace(m, mark_name="it's ]done") if m.mark_name == "deploy" else m
              for m in marks_from_json(path)]
    plan = plan_restore_to(history, RestoreTarget(name="it's ]done"),
                           marks_by_log(history, quoted))

    assert stop_option(plan) == "STOPATMARK = N'it''s ]done'"
