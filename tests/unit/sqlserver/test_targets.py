"""LSN, marked-transaction and immediate targets, planned on recorded msdb rows.

``marked_chain.json`` is ``plain_chain.json`` (full 2001, logs 2002-2005 of Sales)
with the logmarkhistory rows recorded beside it; each test asserts the exact backup
sets chosen, or the exact refusal line.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pitrflow.engines.base import RestoreTarget
from pitrflow.engines.sqlserver.catalog import marks_by_log
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import BackupSetRow, MarkRow, marks_from_json, rows_from_json
from pitrflow.engines.sqlserver.plan import SqlServerRestorePlan
from pitrflow.engines.sqlserver.planner import plan_restore, plan_restore_to
from pitrflow.engines.sqlserver.targets import parse_lsn
from pitrflow.errors import PitrError, UsageError
from tests.unit.sqlserver.conftest import FIXTURES

FORK = "5C2E1B0D-7A41-4F8E-9D3B-2E6C0A9F1B47"
FORK_A = "A1F0C9E2-3B7D-4E65-8C14-9D2B7E6F0A31"
MARKED = FIXTURES / "marked_chain.json"


def rows(name: str = "marked_chain.json") -> list[BackupSetRow]:
    return rows_from_json(FIXTURES / name)


def marks(source: list[MarkRow] | None = None) -> dict[int, tuple[MarkRow, ...]]:
    return marks_by_log(rows(), marks_from_json(MARKED) if source is None else source)


def ids(plan: SqlServerRestorePlan) -> list[int]:
    return [step.backup_set_id for step in plan.steps]


def lsn(value: str, exclusive: bool = False, name: str = "marked_chain.json",
        **kwargs: object) -> SqlServerRestorePlan:
    return plan_restore_to(rows(name), RestoreTarget(lsn=value, exclusive=exclusive),
                           **kwargs)  # type: ignore[arg-type]


def refusal(target: RestoreTarget, history: list[BackupSetRow] | None = None,
            recorded: dict[int, tuple[MarkRow, ...]] | None = None) -> PitrError:
    with pytest.raises(PitrError) as caught:
        plan_restore_to(rows() if history is None else history, target,
                        marks() if recorded is None else recorded)
    assert caught.value.hint, "every refusal says what to do"
    return caught.value


# --- LSN targets ---


def test_lsn_inside_a_log_restores_the_chain_up_to_the_log_holding_it() -> None:
    plan = lsn("42000000020000012")

    assert ids(plan) == [2001, 2002, 2003, 2004]
    assert plan.target_kind == "lsn"
    assert plan.target_lsn == 42000000020000012
    assert plan.exclusive is False
    assert plan.target_utc is None and plan.stopat_local is None
    assert plan.reasons[-2] == ("LSN 42000000020000012 is in log backup 2004 (LSN "
                                "42000000007200001 to 42000000044800001, finished "
                                "2024-03-09 23:45:02 UTC)")
    assert plan.reasons[-1] == ("STOPATMARK on every log restore: the restore stops at that "
                                "log record, including it")


def test_lsn_at_a_log_boundary_belongs_to_the_log_that_starts_there() -> None:
    # 42000000007200001 is log 2003's last LSN, that is the first record of log 2004.
    assert ids(lsn("42000000007200001")) == [2001, 2002, 2003, 2004]
    assert ids(lsn("42000000007200001", exclusive=True)) == [2001, 2002, 2003, 2004]
    assert ids(lsn("42000000007200000")) == [2001, 2002, 2003]


def test_lsn_at_the_end_of_the_full_needs_the_first_log() -> None:
    plan = lsn("41000000123200001")

    assert ids(plan) == [2001, 2002]
    assert plan.reasons[0] == ("full backup 2001: newest non-copy-only full ending at or before "
                               "the target LSN 41000000123200001 (its last LSN "
                               "41000000123200001)")


def test_lsn_before_the_window_is_refused() -> None:
    error = refusal(RestoreTarget(lsn="41000000123200000"))

    assert error.message == (
        "LSN 41000000123200000 is before the end of the oldest full backup of Sales in "
        f"recovery fork {FORK}: full backup 2001 ends at LSN 41000000123200001")
    assert error.hint == ("a restore from it stops at LSN 41000000123200001 or later; choose a "
                          "later target")


@pytest.mark.parametrize("value", ["42000000081600001", "43000000000000001"])
def test_lsn_at_or_after_the_end_of_the_newest_log_is_refused(value: str) -> None:
    error = refusal(RestoreTarget(lsn=value))

    assert error.message == (f"LSN {value} is at or after the end of the newest log backup "
                             "(log backup 2005 ends at LSN 42000000081600001)")
    assert error.hint == ("take a log backup (BACKUP LOG, or pitr ship) and plan again, or "
                          "choose an LSN before 42000000081600001")
    assert ids(lsn("42000000081600000")) == [2001, 2002, 2003, 2004, 2005]


def test_lsn_after_a_full_with_no_log_backup_is_refused() -> None:
    history = [r for r in rows() if r.backup_set_id in (2000, 2001)]

    error = refusal(RestoreTarget(lsn="41000000200000001"), history, {})

    assert error.message == ("LSN 41000000200000001 is after full backup 2001 (last LSN "
                             "41000000123200001) and no log backup follows it")


def test_lsn_in_a_gap_of_the_log_chain_is_refused() -> None:
    # missing_log.json: no log backup covers 513000000204800001..513000000512000001.
    history = rows("missing_log.json")
    assert ids(plan_restore_to(history, RestoreTarget(lsn="513000000100000001"))) == [
        6001, 6002, 6003]

    for target in ("513000000300000001", "513000000600000001"):
        error = refusal(RestoreTarget(lsn=target), history, {})
        assert error.message == (
            "log chain broken between LSN 513000000204800001 (end of log backup 6003, finished "
            "2024-04-07 00:20:04 UTC) and LSN 513000000512000001 (start of log backup 6004, "
            "finished 2024-04-07 00:40:05 UTC)")
        assert "restore to an LSN before 513000000204800001" in (error.hint or "")


def test_lsn_picks_the_differential_that_ends_before_it() -> None:
    # copy_only_full.json: full 3001, differential 3006 ends at LSN 119000000129600001.
    history = rows("copy_only_full.json")

    before = plan_restore_to(history, RestoreTarget(lsn="119000000100000001"))
    after = plan_restore_to(history, RestoreTarget(lsn="119000000200000001"))

    assert ids(before) == [3001, 3002, 3003, 3005, 3007]
    assert ("differential backup 3006 skipped: ends at LSN 119000000129600001, after LSN "
            "119000000100000001") in before.reasons
    assert ids(after) == [3001, 3006, 3007, 3008]


def test_lsn_follows_the_newest_fork_unless_told() -> None:
    history = rows("two_forks.json")

    assert ids(plan_restore_to(history, RestoreTarget(lsn="61000000500000001"))) == [9006, 9007]
    along_a = plan_restore_to(history, RestoreTarget(lsn="61000000500000001"),
                              recovery_fork=FORK_A)
    assert ids(along_a) == [9001, 9002, 9003, 9004]


def test_lsn_inside_a_bulk_logged_log_is_refused() -> None:
    history = rows("bulk_logged.json")

    error = refusal(RestoreTarget(lsn="15000000900000001"), history, {})

    assert error.message == (
        "LSN 15000000900000001 falls inside log backup 1103 (LSN 15000000060000001 to "
        "16000000210000001), which holds bulk-logged changes")
    assert ids(plan_restore_to(history, RestoreTarget(lsn="16000000250000001"))) == [
        1101, 1102, 1103, 1104]


def test_lsn_spellings() -> None:
    assert parse_lsn("37000000042400001") == 37000000042400001
    assert parse_lsn(" lsn:37000000042400001 ") == 37000000042400001
    # fn_dblog's VLF:block:slot in hex: 0x25 = 37, 0x1a8 = 424, slot 1.
    assert parse_lsn("00000025:000001a8:0001") == 37000000042400001
    assert parse_lsn("0000000F:00000190:0025") == 15000000040000037
    for bad in ("0/5000028", "", "-5", "0", "lsn:", "25:1a8", "00000000:000001a8:0001"):
        with pytest.raises(UsageError) as caught:
            parse_lsn(bad)
        assert caught.value.message == f"{bad!r} is not a SQL Server LSN"


# --- marked transactions ---


def test_a_mark_stops_at_the_marked_transaction() -> None:
    plan = plan_restore_to(rows(), RestoreTarget(name="deploy"), marks())

    assert ids(plan) == [2001, 2002]
    assert plan.target_kind == "name"
    assert plan.mark is not None and plan.mark.lsn == 41000000130000002
    assert plan.target_lsn == 41000000130000002
    assert plan.mark_after_local is None
    assert plan.exclusive is False
    assert plan.reasons[0] == (
        "marked transaction 'deploy' (LSN 41000000130000002): committed 2024-03-10 "
        "00:10:00.123 server local time by app_deployer, held by log backup 2002")
    assert plan.reasons[-1] == ("STOPATMARK on every log restore: the restore stops at the "
                                "marked transaction, including it")


def test_an_exclusive_mark_stops_just_before_the_marked_transaction() -> None:
    plan = plan_restore_to(rows(), RestoreTarget(name="deploy", exclusive=True), marks())

    assert ids(plan) == [2001, 2002]
    assert plan.exclusive is True
    assert plan.reasons[-1] == ("STOPBEFOREMARK on every log restore: the restore stops just "
                                "before the marked transaction, leaving it out")


def test_a_reused_mark_name_targets_the_newest_and_passes_over_the_older() -> None:
    plan = plan_restore_to(rows(), RestoreTarget(name="release"), marks())

    assert ids(plan) == [2001, 2002, 2003, 2004, 2005]
    assert plan.mark is not None and plan.mark.lsn == 42000000050000003
    assert plan.mark_after_local == datetime(2024, 3, 10, 0, 50, 0, 3000)
    assert plan.reasons[1] == (
        "1 older mark(s) share the name (LSN 41000000140000001): the newest is the target, "
        "and AFTER '2024-03-10 00:50:00.003' makes RESTORE pass over the older")


def test_a_reused_mark_name_whose_times_do_not_tell_them_apart_is_refused() -> None:
    recorded = [dataclasses.replace(m, mark_time=datetime(2024, 3, 10, 0, 55))
                if m.lsn == 41000000140000001 else m for m in marks_from_json(MARKED)]

    error = refusal(RestoreTarget(name="release"), recorded=marks(recorded))

    assert error.message == (
        "marked transaction 'release' is recorded 2 times and the one at LSN "
        "41000000140000001 committed no earlier (2024-03-10 00:55:00.000) than the newest at "
        "LSN 42000000050000003 (2024-03-10 00:50:00.003)")
    assert "--target-lsn 42000000050000003" in (error.hint or "")


def test_an_unknown_mark_is_refused_listing_the_recorded_ones() -> None:
    error = refusal(RestoreTarget(name="Deploy"))

    assert isinstance(error, SqlServerPlanError)
    assert error.message == "no marked transaction 'Deploy' is recorded for Sales"
    assert error.hint == ("recorded marks: 'deploy', 'release', 'schema-v1'; mark names are "
                          "case-sensitive: did you mean 'deploy'?")


def test_a_mark_with_no_marks_recorded_says_how_marks_are_recorded() -> None:
    error = refusal(RestoreTarget(name="deploy"), rows("plain_chain.json"), {})

    assert error.message == "no marked transaction 'deploy' is recorded for Sales"
    assert (error.hint or "").startswith("no marked transactions are recorded for Sales: a mark "
                                         "is recorded with the log backup taken after")


def test_a_mark_before_the_oldest_full_is_refused() -> None:
    error = refusal(RestoreTarget(name="schema-v1"))

    assert error.message == (
        "marked transaction 'schema-v1' (LSN 40000000800000001) is before the end of the "
        f"oldest full backup of Sales in recovery fork {FORK}: full backup 2001 ends at LSN "
        "41000000123200001")


def test_a_mark_outside_the_requested_fork_is_refused() -> None:
    other = "B7E3D5A9-0C12-4F8B-A6E4-1C9F3D7B2E58"
    history = rows() + [dataclasses.replace(r, backup_set_id=2100, recovery_fork_guid=other,
                                            first_recovery_fork_guid=other, media_set_id=999)
                        for r in rows() if r.backup_set_id == 2001]

    with pytest.raises(SqlServerPlanError) as caught:
        plan_restore_to(history, RestoreTarget(name="deploy"), marks(), recovery_fork=other)

    assert caught.value.message == ("marked transaction 'deploy' (LSN 41000000130000002) is "
                                    f"recorded, but no log backup of recovery fork {other} "
                                    "holds it")


def test_a_mark_whose_log_backup_is_gone_is_unknown() -> None:
    history = [r for r in rows() if r.backup_set_id != 2002]
    recorded = {k: v for k, v in marks().items() if k != 2002}

    error = refusal(RestoreTarget(name="deploy"), history, recorded)

    assert error.message == "no marked transaction 'deploy' is recorded for Sales"


# --- immediate, and what SQL Server refuses ---


def test_immediate_recovers_at_the_end_of_the_newest_full() -> None:
    plan = plan_restore_to(rows(), RestoreTarget(immediate=True), marks())

    assert ids(plan) == [2001]
    assert plan.target_kind == "immediate"
    assert plan.logs == ()
    assert plan.reasons[-1] == (
        "immediate: recovered at the end of full backup 2001 (LSN 41000000123200001, finished "
        "2024-03-09 23:03:12 UTC); no log backup is restored")


def test_immediate_includes_the_newest_differential() -> None:
    plan = plan_restore_to(rows("copy_only_full.json"), RestoreTarget(immediate=True))

    assert ids(plan) == [3001, 3006]
    assert [s.kind for s in plan.steps] == ["full", "differential"]


def test_time_and_latest_plan_as_before() -> None:
    moment = datetime(2024, 3, 10, 0, 40, tzinfo=timezone(timedelta(hours=1)))

    assert plan_restore_to(rows(), RestoreTarget(time=moment)) == plan_restore(rows(), moment)
    assert plan_restore_to(rows(), RestoreTarget()) == plan_restore(rows(), None)


@pytest.mark.parametrize(("target", "message"), [
    (RestoreTarget(xid=1234),
     "SQL Server has no transaction-id target (got transaction 1234)"),
    (RestoreTarget(lsn="42000000020000012", timeline="2"),
     "a target timeline (2) is PostgreSQL's; SQL Server restores along one recovery fork"),
    (RestoreTarget(time=datetime(2024, 3, 10, tzinfo=UTC), exclusive=True),
     "SQL Server's STOPAT has no exclusive form: --exclusive works with an LSN or a marked "
     "transaction"),
])
def test_targets_sql_server_cannot_stop_at_are_refused(target: RestoreTarget,
                                                       message: str) -> None:
    error = refusal(target)

    assert isinstance(error, UsageError)
    assert error.message == message
