"""The repository as the SQL Server catalog: manifests back into msdb rows, damage rejected."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pitrflow.engines.sqlserver.catalog import (
    import_recorded_rows,
    read_sqlserver_catalog,
    require_database,
)
from pitrflow.engines.sqlserver.errors import SqlServerPlanError
from pitrflow.engines.sqlserver.msdb import rows_from_json
from pitrflow.engines.sqlserver.planner import plan_restore
from pitrflow.engines.sqlserver.record import (
    dump_backup_record,
    load_backup_record,
    manifest_key,
    new_backup_id,
    object_name,
)
from pitrflow.errors import RepositoryError
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES

CET = timezone(timedelta(hours=1))


def _key(row: object) -> tuple[int, int, int]:
    return (row.backup_set_id, row.family_sequence_number, row.mirror)  # type: ignore[attr-defined]


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_recording_reads_back_row_for_row(repo: FsRepository, fixture: str) -> None:
    recorded = rows_from_json(FIXTURES / fixture)
    ids = import_recorded_rows(FIXTURES / fixture, repo, "inst")

    catalog = read_sqlserver_catalog(repo, "inst")

    assert catalog.rejected == {}
    assert sorted(r.id for r in catalog.records) == sorted(ids)
    assert sorted(catalog.rows(), key=_key) == sorted(recorded, key=_key)


def test_layout_separates_logs_from_full_and_differential(repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    keys = [info.key for info in repo.list("sales/")]

    assert "sales/backups/20240309T230312Z-F-2001/manifest.json" in keys
    assert ("sales/backups/20240309T230312Z-F-2001/SQLPROD01_Sales_FULL_20240310_000001.bak"
            in keys)
    assert "sales/logs/20240309T231502Z-L-2002/manifest.json" in keys
    assert all(k.startswith(("sales/backups/", "sales/logs/")) for k in keys)


def test_striped_mirrored_full_stores_every_stripe_once(repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "striped_mirror.json", repo, "wh")
    full = next(r for r in read_sqlserver_catalog(repo, "wh").records if r.kind == "full")

    assert [f.family_sequence_number for f in full.files] == [1, 2, 3]
    assert all(f.physical_device_name.startswith("D:\\") for f in full.files)
    assert len(full.rows) == 6, "mirror rows stay in the manifest"


def test_a_log_with_a_damaged_object_is_rejected_and_then_a_gap(repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    key = "sales/logs/20240309T233001Z-L-2003/SQLPROD01_Sales_LOG_20240310_003000.trn"
    repo.put_bytes(key, b"truncated")

    catalog = read_sqlserver_catalog(repo, "sales")

    assert catalog.rejected == {
        "20240309T233001Z-L-2003": "object SQLPROD01_Sales_LOG_20240310_003000.trn has 9 bytes, "
                                   "its manifest says 121",
    }
    with pytest.raises(SqlServerPlanError) as caught:
        plan_restore(catalog.rows("Sales"), datetime(2024, 3, 10, 0, 40, tzinfo=CET))
    assert caught.value.message.startswith(
        "log chain broken between LSN 41000000136000001 (end of log backup 2002")


def test_missing_object_and_missing_manifest_are_rejected(repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    repo.delete("sales/logs/20240309T234502Z-L-2004/SQLPROD01_Sales_LOG_20240310_004500.trn")
    repo.delete("sales/logs/20240310T000002Z-L-2005/manifest.json")

    rejected = read_sqlserver_catalog(repo, "sales").rejected

    assert rejected == {
        "20240309T234502Z-L-2004": "object SQLPROD01_Sales_LOG_20240310_004500.trn is missing",
        "20240310T000002Z-L-2005": "no manifest (incomplete or interrupted backup)",
    }


def test_edited_manifest_fails_its_own_checksum(repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    key = "sales/backups/20240309T230312Z-F-2001/manifest.json"
    doc = json.loads(repo.get_bytes(key))
    doc["msdb_rows"][0]["last_lsn"] = "99999999999999999"
    repo.put_bytes(key, json.dumps(doc).encode())

    rejected = read_sqlserver_catalog(repo, "sales").rejected

    assert rejected == {"20240309T230312Z-F-2001": f"{key} fails its own checksum"}


def test_a_postgresql_manifest_is_not_a_sqlserver_backup(repo: FsRepository) -> None:
    repo.put_bytes("sales/backups/20260101T000000Z-F/manifest.json",
                   b'{"format": 1, "kind": "backup", "checksum": "x"}')
    rejected = read_sqlserver_catalog(repo, "sales").rejected
    assert list(rejected) == ["20260101T000000Z-F"]


def test_the_same_backup_stored_twice_is_counted_once(repo: FsRepository) -> None:
    rows = rows_from_json(FIXTURES / "plain_chain.json")
    import_recorded_rows(rows, repo, "sales")
    # Stored again under another id, as a re-run import would do.
    record = load_backup_record(repo.get_bytes(manifest_key(
        "sales", "full", "20240309T230312Z-F-2001")), "k")
    copy = type(record)(**{**record.__dict__, "id": "20240309T230312Z-F-2001b"})
    for stored in record.files:
        repo.put_bytes(copy.key(stored.name), repo.get_bytes(record.key(stored.name)))
    repo.put_bytes(manifest_key("sales", "full", copy.id), dump_backup_record(copy))

    catalog = read_sqlserver_catalog(repo, "sales")

    assert [r.backup_set_id for r in catalog.records].count(2001) == 1
    assert catalog.rejected == {
        "20240309T230312Z-F-2001b": "same backup set as 20240309T230312Z-F-2001 (stored twice)"}


def test_two_different_sets_with_one_msdb_id_stop_the_read(repo: FsRepository) -> None:
    rows = rows_from_json(FIXTURES / "plain_chain.json")
    import_recorded_rows(rows, repo, "sales")
    other = rows_from_json(FIXTURES / "copy_only_full.json")
    clash = [r.__class__(**{**r.__dict__, "backup_set_id": 2001})
             for r in other if r.backup_set_id == 3001]
    import_recorded_rows(clash, repo, "sales")

    with pytest.raises(RepositoryError) as caught:
        read_sqlserver_catalog(repo, "sales")
    assert "both claim msdb backup_set_id 2001" in caught.value.message
    assert "give the new server its own instance name" in (caught.value.hint or "")


def test_planning_a_database_the_repository_lacks_names_what_it_holds(
        repo: FsRepository) -> None:
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    with pytest.raises(SqlServerPlanError) as caught:
        require_database(read_sqlserver_catalog(repo, "sales"), "Payroll")
    assert caught.value.message == (
        "repository holds no backups of database Payroll for instance sales")
    assert caught.value.hint is not None and caught.value.hint.startswith("it holds: Sales;")


def test_ids_and_object_names() -> None:
    when = datetime(2026, 3, 14, 2, 15, 0, tzinfo=UTC)
    assert new_backup_id("log", when) == "20260314T021500Z-L"
    assert new_backup_id("differential", when.astimezone(CET)) == "20260314T021500Z-D"
    assert object_name("D:\\SQL Backups\\Sales [old]\\full 1.bak") == "full_1.bak"
    assert object_name("\\\\nas\\share\\x.trn") == "x.trn"
    assert object_name("/var/opt/mssql/backup/manifest.json") == "file-manifest.json"
