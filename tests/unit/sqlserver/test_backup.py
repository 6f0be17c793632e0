"""Backup decisions that need no server, and the ingest of a written backup file.

The BACKUP statement itself only runs in the live test; here the refusals are fed
rows shaped as ``sys.databases``/``sys.master_files`` return them, and the ingest
stores a real file with recorded msdb rows and reads it back through the catalog.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from pitrflow.engines.sqlserver.backup import (
    BACKUP_SET_OF_FILE_SQL,
    normalize_kind,
    own_backup_rows,
    refuse_unsuitable,
    store_backup_file,
    use_compression,
)
from pitrflow.engines.sqlserver.backup import (
    differential_base_problem as base_problem,
)
from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.engines.sqlserver.msdb import BACKUP_HISTORY_SQL, rows_from_json
from pitrflow.engines.sqlserver.planner import plan_restore
from pitrflow.errors import BackupRefusedError, ConfigError, ServerError
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES, sqlserver_instance


def test_log_backup_of_a_simple_database_is_refused_in_one_line() -> None:
    with pytest.raises(BackupRefusedError) as caught:
        refuse_unsuitable("Sales]Q", "log", [{"recovery_model_desc": "SIMPLE",
                                              "state_desc": "ONLINE", "is_read_only": False}])
    error = caught.value
    assert error.one_line() == (
        "error [backup-refused]: database Sales]Q uses the SIMPLE recovery model, which keeps "
        "no log to back up HINT: for point-in-time restores run ALTER DATABASE [Sales]]Q] SET "
        "RECOVERY FULL, then take a full backup (pitr backup full) to start the log chain; "
        "otherwise schedule only full and incremental backups")
    assert error.exit_status == 10


@pytest.mark.parametrize("kind", ["full", "differential"])
def test_full_and_differential_of_a_simple_database_are_fine(kind: str) -> None:
    refuse_unsuitable("Sales", kind, [{"recovery_model_desc": "SIMPLE",  # type: ignore[arg-type]
                                       "state_desc": "ONLINE"}])


def test_missing_and_offline_databases_are_refused() -> None:
    with pytest.raises(BackupRefusedError, match="database Sales does not exist on the server"):
        refuse_unsuitable("Sales", "full", [])
    with pytest.raises(BackupRefusedError, match="database Sales is RESTORING, not ONLINE"):
        refuse_unsuitable("Sales", "full", [{"recovery_model_desc": "FULL",
                                             "state_desc": "RESTORING"}])


def test_kinds_map_onto_sql_server_backups() -> None:
    assert [normalize_kind(k) for k in ("full", "incremental", "differential", "log")] == [
        "full", "differential", "differential", "log"]
    with pytest.raises(BackupRefusedError, match="unknown backup kind 'wal'"):
        normalize_kind("wal")


def test_compression_is_dropped_only_where_the_edition_lacks_it() -> None:
    assert use_compression(True, "Express Edition (64-bit)") == (
        False, "Express Edition (64-bit) cannot compress backups; this backup is uncompressed")
    assert use_compression(True, "Standard Edition (64-bit)") == (True, None)
    assert use_compression(False, "Enterprise Edition: Core-based Licensing (64-bit)") == (
        False, None)


def test_history_query_for_one_file_narrows_the_shared_query() -> None:
    assert BACKUP_SET_OF_FILE_SQL.startswith(BACKUP_HISTORY_SQL.split("WHERE")[0])
    assert BACKUP_SET_OF_FILE_SQL.count("?") == 2
    assert "f.physical_device_name = ?" in BACKUP_SET_OF_FILE_SQL


def test_differential_needs_its_base_full_in_the_repository(repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "copy_only_full.json", repo, "inv")
    catalog = read_sqlserver_catalog(repo, "inv")
    database = catalog.records[0].database

    # sys.master_files after full 3001: its checkpoint LSN and backup_set_uuid.
    assert base_problem(catalog, database, [{
        "differential_base_lsn": 118000000332000003,
        "differential_base_guid": "9e4a7c21-55b0-4d3f-8a16-c2f7e03b9d58"}]) is None
    # Only the LSN known (older drivers return NULL GUIDs): the LSN decides.
    assert base_problem(catalog, database, [{
        "differential_base_lsn": 118000000332000003, "differential_base_guid": None}]) is None
    # A full taken outside pitrflow moved the base.
    problem = base_problem(catalog, database, [{
        "differential_base_lsn": 120000000000000001,
        "differential_base_guid": "00000000-0000-0000-0000-000000000001"}])
    assert problem == (
        "the server's differential base (full backup with checkpoint LSN 120000000000000001) "
        "is not in the repository: a full was taken outside pitrflow since the last one it "
        "stored")
    assert base_problem(catalog, database, [{"differential_base_lsn": None,
                                              "differential_base_guid": None}]) == (
        f"database {database} has no full backup to base a differential on")


def _new_backup_rows(server_file: str) -> list[dict[str, object]]:
    """Rows as BACKUP_SET_OF_FILE_SQL returns them for a file pitrflow just wrote."""
    raw = [row for row in rows_from_json(FIXTURES / "plain_chain.json")
           if row.backup_set_id == 2001]
    return [{**dataclasses.asdict(row), "physical_device_name": server_file} for row in raw]


def test_msdb_rows_of_the_new_file_are_checked_to_be_it() -> None:
    rows = _new_backup_rows("D:\\Backups\\pitrflow\\sales_x.bak")
    older = [{**row, "backup_set_id": 1990, "type": "L"} for row in rows]

    parsed = own_backup_rows(older + rows, "D:\\Backups\\pitrflow\\sales_x.bak", "full")
    assert [row.backup_set_id for row in parsed] == [2001]

    with pytest.raises(ServerError, match="as type D, expected L"):
        own_backup_rows(rows, "D:\\Backups\\pitrflow\\sales_x.bak", "log")
    with pytest.raises(ServerError, match="msdb has no backup history for"):
        own_backup_rows([], "D:\\Backups\\pitrflow\\sales_x.bak", "full")


def test_stored_backup_is_hashed_copied_and_planned_from(repo: FsRepository,
                                                         worker_dir: Path) -> None:
    instance = sqlserver_instance("Sales", worker_dir)
    written = worker_dir / "sales_20240309T230001Z-F.bak"
    payload = b"TAPE" + bytes(range(256)) * 400
    written.write_bytes(payload)
    rows = own_backup_rows(_new_backup_rows("D:\\Backups\\pitrflow\\" + written.name),
                           "D:\\Backups\\pitrflow\\" + written.name, "full")

    record = store_backup_file(repo, instance, "full", "20240309T230001Z-F", rows, written,
                               compression=True, duration_seconds=1.5,
                               server={"edition": "Developer Edition (64-bit)"})

    stored = repo.get_bytes("sales/backups/20240309T230001Z-F/" + written.name)
    assert stored == payload
    assert record.files[0].sha256 == hashlib.sha256(payload).hexdigest()
    catalog = read_sqlserver_catalog(repo, "sales")
    assert catalog.rejected == {}
    (back,) = catalog.records
    assert back.rows == tuple(rows)
    assert (back.compression, back.checksum, back.source) == (True, True, "backup")
    plan = plan_restore(catalog.rows("Sales"), None)
    assert plan.full.files == ("D:\\Backups\\pitrflow\\" + written.name,)


def test_a_file_the_worker_cannot_see_is_a_configuration_error(repo: FsRepository,
                                                               worker_dir: Path) -> None:
    instance = sqlserver_instance("Sales", worker_dir)
    rows = own_backup_rows(_new_backup_rows("D:\\Backups\\pitrflow\\gone.bak"),
                           "D:\\Backups\\pitrflow\\gone.bak", "full")
    with pytest.raises(ConfigError) as caught:
        store_backup_file(repo, instance, "full", "20240309T230001Z-F", rows,
                          worker_dir / "gone.bak", compression=True, duration_seconds=None)
    assert caught.value.message == f"backup file {worker_dir / 'gone.bak'} is not visible to " \
                                   "the worker"
    assert list(repo.list("sales/")) == [], "nothing stored, no manifest"
