"""LSN, mark and immediate targets through the Engine: `pitrflow.local.plan_restore`,
the way the CLI and the restore_to_point flow plan, on a repository built from
recorded msdb rows and marks.  What a dry run shows: the plan text, its artifact,
its data and the T-SQL.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from pitrflow import local
from pitrflow.config import load_config
from pitrflow.engines.base import RestoreDestination, RestorePlan, RestoreTarget
from pitrflow.engines.sqlserver import ops
from pitrflow.engines.sqlserver.backup import store_backup_file
from pitrflow.engines.sqlserver.catalog import read_sqlserver_catalog
from pitrflow.engines.sqlserver.msdb import marks_from_json, rows_from_json
from pitrflow.engines.sqlserver.record import manifest_key
from pitrflow.errors import PitrError, UsageError
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES, sqlserver_instance, write_config

MARKED = FIXTURES / "marked_chain.json"
DESTINATION = RestoreDestination(database_name="Sales_pitr")


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = write_config(tmp_path, name="sales", database="Sales")
    ops.sqlserver_import_recorded(MARKED, FsRepository(tmp_path / "repo"), "sales")
    return path


def _plan(config_path: Path, target: RestoreTarget) -> RestorePlan:
    return local.plan_restore(load_config(config_path), "sales", target, DESTINATION)


def test_a_mark_through_the_engine_shows_stopbeforemark(config_path: Path) -> None:
    plan = _plan(config_path, RestoreTarget(name="deploy", exclusive=True))

    lines = plan.text.splitlines()
    assert lines[0] == ("SQL Server restore of Sales (instance sales) to marked transaction "
                        "'deploy' (LSN 41000000130000002, committed 2024-03-10 00:10:00.123 "
                        "server local time) (exclusive: just before it)")
    assert lines[2] == "  stop         STOPBEFOREMARK = N'deploy' (on every log restore)"
    statements = plan.data["statements"]
    assert [s.split(" FROM ")[0] for s in statements] == [
        "RESTORE FILELISTONLY", "RESTORE DATABASE [Sales_pitr]", "RESTORE LOG [Sales_pitr]",
        "RESTORE DATABASE [Sales_pitr] WITH RECOVERY"]
    assert statements[2].endswith("WITH FILE = 1, NORECOVERY, STOPBEFOREMARK = N'deploy'")
    assert lines[lines.index("T-SQL") + 1:] == [f"  {s};" for s in statements]
    data = plan.data["plan"]
    assert data["target_kind"] == "name" and data["exclusive"] is True
    assert data["target_lsn"] == "41000000130000002"
    assert data["mark"] == {"database_name": "Sales", "mark_name": "deploy",
                            "description": "deploy 2024.03.10", "user_name": "app_deployer",
                            "lsn": "41000000130000002", "mark_time": "2024-03-10T00:10:00.123000"}
    assert data["stop"] == "STOPBEFOREMARK = N'deploy'"
    assert "| stop on each log | STOPBEFOREMARK = N'deploy' |" in plan.markdown
    assert plan.target == RestoreTarget(name="deploy", exclusive=True)
    assert json.dumps(plan.data)  # the flow returns it as JSON


def test_an_lsn_through_the_engine(config_path: Path) -> None:
    plan = _plan(config_path, RestoreTarget(lsn="42000000020000012"))

    lines = plan.text.splitlines()
    assert lines[0] == ("SQL Server restore of Sales (instance sales) to LSN "
                        "42000000020000012")
    assert lines[2] == ("  stop         STOPATMARK = 'lsn:42000000020000012' (on every log "
                        "restore)")
    assert [s["backup_set_id"] for s in plan.data["plan"]["steps"]] == [2001, 2002, 2003, 2004]
    assert sum("STOPATMARK = 'lsn:42000000020000012'" in s
               for s in plan.data["statements"]) == 3


def test_immediate_through_the_engine_restores_no_log(config_path: Path) -> None:
    plan = _plan(config_path, RestoreTarget(immediate=True))

    assert plan.text.splitlines()[0] == (
        "SQL Server restore of Sales (instance sales) to the end of full backup set 2001 "
        "(immediate: LSN 41000000123200001)")
    assert not any(s.startswith("RESTORE LOG") for s in plan.data["statements"])
    assert plan.data["plan"]["stop"] is None


@pytest.mark.parametrize(("target", "line"), [
    (RestoreTarget(name="Deploy"),
     "error [restore-refused]: no marked transaction 'Deploy' is recorded for Sales HINT: "
     "recorded marks: 'deploy', 'release', 'schema-v1'; mark names are case-sensitive: did "
     "you mean 'deploy'?"),
    (RestoreTarget(lsn="41000000000000001"),
     "error [restore-refused]: LSN 41000000000000001 is before the end of the oldest full "
     "backup of Sales in recovery fork 5C2E1B0D-7A41-4F8E-9D3B-2E6C0A9F1B47: full backup 2001 "
     "ends at LSN 41000000123200001 HINT: a restore from it stops at LSN 41000000123200001 or "
     "later; choose a later target"),
    (RestoreTarget(lsn="0/5000028"),
     "error [usage]: '0/5000028' is not a SQL Server LSN HINT: give the decimal LSN msdb and "
     "RESTORE HEADERONLY show (e.g. 37000000042400001), or fn_dblog's hex form "
     "00000025:000001a8:0001"),
])
def test_unreachable_targets_are_one_line(config_path: Path, target: RestoreTarget,
                                          line: str) -> None:
    with pytest.raises(PitrError) as caught:
        _plan(config_path, target)

    assert caught.value.one_line() == line


def test_xid_is_refused_for_sql_server(config_path: Path) -> None:
    with pytest.raises(UsageError, match="SQL Server has no transaction-id target"):
        _plan(config_path, RestoreTarget(xid=4242))


def test_info_lists_the_marks_a_restore_can_name(config_path: Path, tmp_path: Path) -> None:
    info = local.engine_for(load_config(config_path), "sales").info(
        FsRepository(tmp_path / "repo"))

    assert [(m["name"], m["lsn"]) for m in info.data["marks"]["Sales"]] == [
        ("schema-v1", "40000000800000001"), ("deploy", "41000000130000002"),
        ("release", "41000000140000001"), ("release", "42000000050000003")]
    assert ("mark Sales: 'deploy' LSN 41000000130000002, committed 2024-03-10T00:10:00.123 "
            "server local time, in 20240309T231502Z-L-2002") in info.text.splitlines()


def test_a_log_backup_stores_its_marks_and_the_catalog_reads_them(repo: FsRepository,
                                                                 worker_dir: Path) -> None:
    instance = sqlserver_instance("Sales", worker_dir)
    log_rows = [r for r in rows_from_json(MARKED) if r.backup_set_id == 2005]
    mark = [m for m in marks_from_json(MARKED) if m.lsn == 42000000050000003]
    written = worker_dir / "sales_20240310T000002Z-L.trn"
    written.write_bytes(b"log backup bytes")

    store_backup_file(repo, instance, "log", "20240310T000002Z-L", log_rows, written,
                      compression=True, duration_seconds=1.0, marks=mark)

    manifest = json.loads(repo.get_bytes(manifest_key("sales", "log", "20240310T000002Z-L")))
    assert manifest["marks"] == [{
        "database_name": "Sales", "mark_name": "release", "description": "release 42",
        "user_name": "app_deployer", "lsn": "42000000050000003",
        "mark_time": "2024-03-10T00:50:00.003000"}]
    catalog = read_sqlserver_catalog(repo, "sales")
    assert catalog.rejected == {}
    assert catalog.marks("Sales") == {2005: tuple(mark)}


def test_a_manifest_with_a_mark_outside_its_log_is_rejected(repo: FsRepository,
                                                            worker_dir: Path) -> None:
    instance = sqlserver_instance("Sales", worker_dir)
    log_rows = [r for r in rows_from_json(MARKED) if r.backup_set_id == 2005]
    stray = marks_from_json(MARKED)[1]  # deploy, which log 2002 holds
    written = worker_dir / "sales_x.trn"
    written.write_bytes(b"log backup bytes")

    store_backup_file(repo, instance, "log", "20240310T000002Z-L", log_rows, written,
                      compression=True, duration_seconds=1.0, marks=[stray])

    catalog = read_sqlserver_catalog(repo, "sales")
    assert catalog.records == []
    assert catalog.rejected == {"20240310T000002Z-L": (
        "mark 'deploy' at LSN 41000000130000002 is outside the backup's LSN range "
        "42000000044800001..42000000081600001")}


def test_a_recorded_mark_no_log_backup_holds_is_refused_before_anything_is_written(
        repo: FsRepository, tmp_path: Path) -> None:
    recording = json.loads(MARKED.read_text())
    recording["marks"].append({"database_name": "Sales", "mark_name": "late", "description": None,
                               "user_name": None, "lsn": "50000000000000001",
                               "mark_time": datetime(2024, 3, 10, 2).isoformat()})
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(recording))

    with pytest.raises(PitrError) as caught:
        ops.sqlserver_import_recorded(path, repo, "sales")

    assert caught.value.message == ("mark 'late' of Sales at LSN 50000000000000001 is in no "
                                    "recorded log backup")
    assert list(repo.list("sales/")) == []
