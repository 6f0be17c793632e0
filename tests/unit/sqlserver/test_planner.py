"""The SQL Server restore planner against recorded msdb rows (fixtures/*.json).

Each fixture's ``description`` says what happened on the server; the tests assert on
the exact backup sets chosen and the exact refusal lines.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from pitrflow.engines.sqlserver.errors import MsdbHistoryError, SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import (
    BACKUP_HISTORY_SQL,
    BackupSetRow,
    row_times_utc,
    rows_from_json,
)
from pitrflow.engines.sqlserver.planner import SqlServerRestorePlan, plan_restore

FIXTURES = Path(__file__).parent / "fixtures"
CET = timezone(timedelta(hours=1))
CEST = timezone(timedelta(hours=2))
EST = timezone(timedelta(hours=-5))
FORK_A = "A1F0C9E2-3B7D-4E65-8C14-9D2B7E6F0A31"
FORK_B = "B7E3D5A9-0C12-4F8B-A6E4-1C9F3D7B2E58"


def rows(name: str) -> list[BackupSetRow]:
    return rows_from_json(FIXTURES / name)


def rows_from_json_raw(name: str) -> list[dict[str, object]]:
    return json.loads((FIXTURES / name).read_text())["rows"]


def ids(plan: SqlServerRestorePlan) -> list[int]:
    return [step.backup_set_id for step in plan.steps]


def edit(all_rows: list[BackupSetRow], backup_set_id: int, **changes: object) -> list[BackupSetRow]:
    """The rows with one backup set's columns changed, as if msdb had recorded that."""
    return [
        dataclasses.replace(row, **changes) if row.backup_set_id == backup_set_id else row
        for row in all_rows
    ]


def refusal(all_rows: list[BackupSetRow], target: datetime | None, **kwargs: object) -> str:
    with pytest.raises(SqlServerPlanError) as caught:
        plan_restore(all_rows, target, **kwargs)  # type: ignore[arg-type]
    assert caught.value.hint, "every refusal says what to do"
    return caught.value.message


# --- plain chain ---


def test_target_inside_third_log_restores_full_and_three_logs() -> None:
    plan = plan_restore(rows("plain_chain.json"), datetime(2024, 3, 10, 0, 40, 0, 250999, CET))

    assert ids(plan) == [2001, 2002, 2003, 2004]
    assert plan.differential is None
    assert plan.target_utc == datetime(2024, 3, 9, 23, 40, 0, 250999, UTC)
    assert plan.stopat_local == datetime(2024, 3, 10, 0, 40, 0, 250000)
    assert plan.stopat_time_zone == 4
    assert plan.full.files == (
        "D:\\SQLBackups\\Sales\\FULL\\SQLPROD01_Sales_FULL_20240310_000001.bak",
    )
    assert plan.full.finish_utc == datetime(2024, 3, 9, 23, 3, 12, tzinfo=UTC)
    assert [(log.first_lsn, log.last_lsn) for log in plan.logs] == [
        (41000000096800001, 41000000136000001),
        (41000000136000001, 42000000007200001),
        (42000000007200001, 42000000044800001),
    ]


def test_latest_restores_every_log_of_the_chain_without_stopat() -> None:
    plan = plan_restore(rows("plain_chain.json"), None)

    assert ids(plan) == [2001, 2002, 2003, 2004, 2005]
    assert plan.target_utc is None
    assert plan.stopat_local is None
    assert plan.stopat_time_zone is None


def test_target_equal_to_a_log_finish_stops_at_that_log() -> None:
    plan = plan_restore(rows("plain_chain.json"), datetime(2024, 3, 10, 0, 30, 1, tzinfo=CET))

    assert ids(plan) == [2001, 2002, 2003]


def test_target_after_last_log_is_refused() -> None:
    message = refusal(rows("plain_chain.json"), datetime(2024, 3, 10, 0, 5, tzinfo=UTC))

    assert message == (
        "target 2024-03-10 00:05:00 UTC is after the last log backup 2005 finished "
        "(2024-03-10 00:00:02 UTC)"
    )


def test_target_before_any_full_is_refused() -> None:
    message = refusal(rows("plain_chain.json"), datetime(2024, 3, 10, 0, 2, tzinfo=CET))

    assert message == (
        "no full backup of Sales finished at or before 2024-03-09 23:02:00 UTC in "
        "recovery fork 5C2E1B0D-7A41-4F8E-9D3B-2E6C0A9F1B47"
    )


def test_naive_target_is_refused() -> None:
    message = refusal(rows("plain_chain.json"), datetime(2024, 3, 10, 0, 40))

    assert message == "target 2024-03-10T00:40:00 has no time zone"


def test_explicit_stopat_time_zone_overrides_the_rows() -> None:
    plan = plan_restore(
        rows("plain_chain.json"), datetime(2024, 3, 9, 23, 40, tzinfo=UTC), stopat_time_zone=-20
    )

    assert plan.stopat_local == datetime(2024, 3, 9, 18, 40)
    assert plan.stopat_time_zone == -20


def test_full_without_logs_restores_to_latest_but_refuses_a_target() -> None:
    history = [row for row in rows("plain_chain.json") if row.backup_set_id <= 2001]

    assert ids(plan_restore(history, None)) == [2001]
    assert refusal(history, datetime(2024, 3, 10, 0, 10, tzinfo=CET)) == (
        "target 2024-03-09 23:10:00 UTC is after full backup 2001 finished "
        "(2024-03-09 23:03:12 UTC) and no log backup follows it"
    )


def test_file_rows_disagreeing_on_set_columns_are_refused() -> None:
    history = rows("striped_mirror.json")
    history[0] = dataclasses.replace(history[0], last_lsn=history[0].last_lsn + 1)

    message = refusal(history, None)

    assert message == (
        f"backup set {history[0].backup_set_id} has file rows that disagree on set-level columns"
    )


def test_log_written_to_nul_is_refused() -> None:
    history = edit(rows("plain_chain.json"), 2003, physical_device_name="NUL")

    message = refusal(history, datetime(2024, 3, 10, 0, 40, tzinfo=CET))

    assert message == "log backup 2003 was written to NUL and discarded"


def test_log_on_a_virtual_device_is_refused() -> None:
    history = edit(rows("plain_chain.json"), 2003, device_type=7, physical_device_name="{6F0A}")

    message = refusal(history, None)

    assert message == "log backup 2003 was not written to disk files or URLs (device type 7)"


def test_unknown_time_zone_is_refused_naming_the_backup_set() -> None:
    history = edit(rows("plain_chain.json"), 2002, time_zone=127)

    with pytest.raises(MsdbHistoryError) as caught:
        plan_restore(history, datetime(2024, 3, 10, 0, 40, tzinfo=CET))

    assert caught.value.message == "backup set 2002: time zone is unknown (msdb time_zone 127)"


def test_rows_of_two_databases_are_refused() -> None:
    history = rows("plain_chain.json") + rows("empty_log.json")

    assert refusal(history, None) == "backup history mixes databases: HR, Sales"


def test_no_rows_are_refused() -> None:
    assert refusal([], None) == "no backup history rows to plan from"


# --- copy-only full ---


def test_differential_attaches_to_the_real_full_not_the_newer_copy_only() -> None:
    plan = plan_restore(rows("copy_only_full.json"), datetime(2024, 1, 14, 3, 45, tzinfo=UTC))

    assert ids(plan) == [3001, 3006, 3007, 3008]
    assert plan.differential is not None and plan.differential.backup_set_id == 3006
    assert any("copy-only full 3004 skipped" in reason for reason in plan.reasons)


def test_copy_only_full_is_never_a_restore_base() -> None:
    plan = plan_restore(rows("copy_only_full.json"), datetime(2024, 1, 14, 2, 25, tzinfo=UTC))

    assert ids(plan) == [3001, 3002, 3003, 3005]


def test_differential_of_an_older_full_is_not_used_even_without_base_guid() -> None:
    # diff 2995 is based on last week's full 2990; without the GUID only its base
    # LSN tells it apart, and it names 2990's checkpoint, not 3001's
    history = edit(rows("copy_only_full.json"), 2995, differential_base_guid=None)

    plan = plan_restore(history, datetime(2024, 1, 14, 2, 25, tzinfo=UTC))

    assert ids(plan) == [3001, 3002, 3003, 3005]


def test_differential_naming_another_base_guid_is_not_used() -> None:
    history = edit(
        rows("copy_only_full.json"),
        3006,
        differential_base_guid="1F0D3B6E-8C92-4A57-B4E1-7A9C2D5E6F80",
    )

    plan = plan_restore(history, datetime(2024, 1, 14, 3, 45, tzinfo=UTC))

    assert ids(plan) == [3001, 3002, 3003, 3005, 3007, 3008]


# --- log taken while the full ran ---


def test_log_taken_while_the_full_ran_starts_the_chain() -> None:
    plan = plan_restore(rows("log_during_full.json"), datetime(2024, 2, 5, 2, 25, tzinfo=EST))

    assert ids(plan) == [4001, 4003, 4004]
    assert plan.logs[0].finish_utc < plan.full.finish_utc
    assert plan.stopat_local == datetime(2024, 2, 5, 2, 25)


# --- empty log ---


def test_empty_log_is_skipped() -> None:
    plan = plan_restore(rows("empty_log.json"), datetime(2024, 6, 2, 0, 35, tzinfo=CEST))

    assert ids(plan) == [5001, 5002, 5004]
    assert "empty log backup 5003 skipped (first LSN = last LSN)" in plan.reasons


def test_empty_log_is_skipped_when_restoring_to_latest() -> None:
    plan = plan_restore(rows("empty_log.json"), None)

    assert ids(plan) == [5001, 5002, 5004, 5005]
    assert "empty log backup 5003 skipped (first LSN = last LSN)" in plan.reasons


def test_empty_log_after_the_stop_is_not_reported() -> None:
    plan = plan_restore(rows("empty_log.json"), datetime(2024, 6, 2, 0, 10, tzinfo=CEST))

    assert ids(plan) == [5001, 5002]
    assert not any("empty" in reason for reason in plan.reasons)


# --- missing log ---

GAP_MESSAGE = (
    "log chain broken between LSN 513000000204800001 (end of log backup 6003, finished "
    "2024-04-07 00:20:04 UTC) and LSN 513000000512000001 (start of log backup 6004, "
    "finished 2024-04-07 00:40:05 UTC)"
)


def test_target_after_a_missing_log_is_refused_naming_the_gap() -> None:
    message = refusal(rows("missing_log.json"), datetime(2024, 4, 7, 0, 45, tzinfo=UTC))

    assert message == GAP_MESSAGE


def test_latest_across_a_missing_log_is_refused() -> None:
    assert refusal(rows("missing_log.json"), None) == GAP_MESSAGE


def test_target_before_the_missing_log_is_planned() -> None:
    plan = plan_restore(rows("missing_log.json"), datetime(2024, 4, 7, 0, 15, tzinfo=UTC))

    assert ids(plan) == [6001, 6002, 6003]


def test_missing_first_log_after_the_full_is_refused() -> None:
    history = [row for row in rows("missing_log.json") if row.backup_set_id != 6002]

    message = refusal(history, None)

    assert message.startswith(
        "log chain broken between LSN 512000000253600001 (end of full backup 6001, "
    )


# --- differential finished after the target ---


def test_differential_finishing_after_target_is_not_used() -> None:
    plan = plan_restore(rows("diff_after_target.json"), datetime(2024, 3, 17, 12, 3, tzinfo=CET))

    assert plan.differential is None
    assert ids(plan) == [7001, 7002, 7003, 7004, 7005, 7007, 7008]
    assert plan.logs[0].first_lsn <= plan.full.last_lsn < plan.logs[0].last_lsn
    assert (
        "differential backup 7006 skipped: finished 2024-03-17 11:06:00 UTC, after the target"
        in plan.reasons
    )


def test_differential_is_used_once_finished_before_target() -> None:
    plan = plan_restore(rows("diff_after_target.json"), datetime(2024, 3, 17, 12, 10, tzinfo=CET))

    assert ids(plan) == [7001, 7006, 7008]


# --- stripes and mirrors ---


def test_mirrors_are_excluded_and_stripes_kept_in_family_order() -> None:
    plan = plan_restore(rows("striped_mirror.json"), None)

    assert ids(plan) == [8001, 8002, 8003]
    assert plan.full.files == (
        "D:\\SQLBackups\\Warehouse\\FULL\\SQLPROD01_Warehouse_FULL_20240421_220000_1.bak",
        "D:\\SQLBackups\\Warehouse\\FULL\\SQLPROD01_Warehouse_FULL_20240421_220000_2.bak",
        "D:\\SQLBackups\\Warehouse\\FULL\\SQLPROD01_Warehouse_FULL_20240421_220000_3.bak",
    )
    assert plan.logs[0].files == (
        "D:\\SQLBackups\\Warehouse\\LOG\\SQLPROD01_Warehouse_LOG_20240421_230000.trn",
    )


def test_missing_stripe_is_refused_naming_it_and_its_mirror() -> None:
    history = [
        row
        for row in rows("striped_mirror.json")
        if not (row.backup_set_id == 8001 and row.family_sequence_number == 2 and row.mirror == 0)
    ]

    with pytest.raises(SqlServerPlanError) as caught:
        plan_restore(history, None)

    assert caught.value.message == "full backup 8001 is missing stripe 2 of 3 (media set 901)"
    assert caught.value.hint == (
        "a restore needs every stripe of the media set; a mirror copy is recorded at "
        "\\\\BACKUPNAS02\\sql\\SQLBackups\\Warehouse\\FULL\\"
        "SQLPROD01_Warehouse_FULL_20240421_220000_2.bak"
    )


# --- recovery forks ---


def test_newest_fork_is_used_by_default() -> None:
    plan = plan_restore(rows("two_forks.json"), datetime(2024, 5, 13, 6, 30, tzinfo=CEST))

    assert plan.recovery_fork == FORK_B
    assert ids(plan) == [9006, 9007, 9008]


def test_older_fork_is_planned_when_asked_and_other_fork_logs_ignored() -> None:
    plan = plan_restore(
        rows("two_forks.json"),
        datetime(2024, 5, 13, 3, 30, tzinfo=CEST),
        recovery_fork=FORK_A.lower(),
    )

    assert plan.recovery_fork == FORK_A
    assert ids(plan) == [9001, 9002, 9003, 9004, 9005]


def test_target_before_the_newest_fork_full_points_at_the_older_fork() -> None:
    with pytest.raises(SqlServerPlanError) as caught:
        plan_restore(rows("two_forks.json"), datetime(2024, 5, 13, 3, 30, tzinfo=CEST))

    assert caught.value.message == (
        "no full backup of CRM finished at or before 2024-05-13 01:30:00 UTC in recovery "
        f"fork {FORK_B}"
    )
    assert caught.value.hint is not None and caught.value.hint.endswith(
        f"or pass recovery_fork to restore along another fork: {FORK_A}"
    )


def test_unknown_fork_is_refused() -> None:
    message = refusal(rows("two_forks.json"), None, recovery_fork=FORK_A.replace("A1", "C3"))

    assert message == "no backups recorded in recovery fork C3F0C9E2-3B7D-4E65-8C14-9D2B7E6F0A31"


# --- daylight saving ---


def test_chain_across_fall_back_follows_lsns_and_stops_after_the_change() -> None:
    plan = plan_restore(rows("dst_fall_back.json"), datetime(2024, 11, 3, 6, 40, tzinfo=UTC))

    assert ids(plan) == [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008]
    finishes = [log.finish_utc for log in plan.logs]
    assert finishes == sorted(finishes)
    assert [log.time_zone for log in plan.logs] == [-16, -16, -16, -16, -20, -20, -20]
    assert plan.stopat_local == datetime(2024, 11, 3, 1, 40)
    assert plan.stopat_time_zone == -20


def test_chain_across_fall_back_stops_before_the_change_in_daylight_time() -> None:
    # 05:10 UTC is 01:10 EDT; log 1005 finished 01:30:04 EDT (05:30:04 UTC), while
    # 1006 finished at local 01:00:04 EST, which a local-time sort would put first
    plan = plan_restore(rows("dst_fall_back.json"), datetime(2024, 11, 3, 5, 10, tzinfo=UTC))

    assert ids(plan) == [1001, 1002, 1003, 1004, 1005]
    assert plan.stopat_local == datetime(2024, 11, 3, 1, 10)
    assert plan.stopat_time_zone == -16


# --- bulk-logged ---


def test_target_inside_bulk_logged_log_is_refused() -> None:
    with pytest.raises(SqlServerPlanError) as caught:
        plan_restore(rows("bulk_logged.json"), datetime(2024, 5, 5, 1, 30, tzinfo=UTC))

    assert caught.value.message == (
        "target 2024-05-05 01:30:00 UTC falls inside log backup 1103 (2024-05-05 02:00:00 "
        "UTC to 2024-05-05 02:01:40 UTC), which holds bulk-logged changes"
    )
    assert caught.value.hint == (
        "point-in-time restore cannot stop inside a bulk-logged log backup; choose a "
        "target at or before 2024-05-05 01:00:03 UTC or at or after 2024-05-05 02:01:40 UTC"
    )


def test_target_at_end_of_bulk_logged_log_is_planned() -> None:
    plan = plan_restore(rows("bulk_logged.json"), datetime(2024, 5, 5, 2, 1, 40, tzinfo=UTC))

    assert ids(plan) == [1101, 1102, 1103]


def test_target_after_bulk_logged_log_restores_through_it() -> None:
    plan = plan_restore(rows("bulk_logged.json"), datetime(2024, 5, 5, 2, 30, tzinfo=UTC))

    assert ids(plan) == [1101, 1102, 1103, 1104]
    assert plan.logs[1].has_bulk_logged_data


# --- msdb rows ---


def test_rows_from_json_reads_lsns_exactly_and_normalizes_guids() -> None:
    row = rows("plain_chain.json")[1]

    assert row.backup_set_id == 2001
    assert row.type == "D"
    assert row.is_copy_only is False
    assert row.checkpoint_lsn == 41000000120000037
    assert row.backup_start_date == datetime(2024, 3, 10, 0, 0, 1)
    assert row.recovery_fork_guid == "5C2E1B0D-7A41-4F8E-9D3B-2E6C0A9F1B47"


def test_rows_from_json_accepts_driver_values_and_lowercase_guids() -> None:
    raw = {
        "backup_set_id": 1,
        "database_name": "db",
        "type": "l",
        "is_copy_only": False,
        "first_lsn": Decimal("37000000036800001"),
        "last_lsn": "37000000040000001",
        "checkpoint_lsn": 37000000036000001,
        "database_backup_lsn": None,
        "differential_base_lsn": None,
        "differential_base_guid": None,
        "recovery_fork_guid": FORK_A.lower(),
        "first_recovery_fork_guid": "{" + FORK_A.lower() + "}",
        "backup_start_date": datetime(2024, 1, 1, 12, 0),
        "backup_finish_date": "2024-01-01 12:00:03.123",
        "time_zone": -20,
        "has_bulk_logged_data": "0",
        "media_set_id": 5,
        "family_sequence_number": 1,
        "mirror": 0,
        "physical_device_name": "x.trn",
        "family_count": 1,
        "backup_size": 1024,
    }

    (row,) = rows_from_json([raw])

    assert row.type == "L"
    assert row.first_lsn == 37000000036800001
    assert row.first_recovery_fork_guid == row.recovery_fork_guid == FORK_A
    assert row.position == 1 and row.device_type == 2 and row.backup_set_uuid is None
    assert row_times_utc(row) == (
        datetime(2024, 1, 1, 17, 0, tzinfo=UTC),
        datetime(2024, 1, 1, 17, 0, 3, 123000, tzinfo=UTC),
    )


def test_float_lsn_is_refused_because_json_floats_lose_digits() -> None:
    raw = dict(rows_from_json_raw("plain_chain.json")[0], first_lsn=4.0000000771200001e16)

    with pytest.raises(MsdbHistoryError) as caught:
        rows_from_json([raw])

    assert caught.value.message.startswith(
        "msdb row 0 (backup_set_id 2000): column first_lsn has bad value"
    )


def test_unknown_and_missing_columns_are_refused() -> None:
    raw = rows_from_json_raw("plain_chain.json")[0]

    with pytest.raises(MsdbHistoryError) as unknown:
        rows_from_json([dict(raw, postion=2)])
    with pytest.raises(MsdbHistoryError) as missing:
        rows_from_json([{k: v for k, v in raw.items() if k != "last_lsn"}])

    assert unknown.value.message == "msdb row 0 (backup_set_id 2000): unknown column postion"
    assert missing.value.message == "msdb row 0 (backup_set_id 2000): column last_lsn is missing"


def test_history_query_reads_every_row_field_with_one_parameter() -> None:
    assert BACKUP_HISTORY_SQL.count("?") == 1
    for field in dataclasses.fields(BackupSetRow):
        assert field.name in BACKUP_HISTORY_SQL, field.name
