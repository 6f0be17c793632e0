"""SQL Server verify and check on a repository built from recorded msdb rows.

Verify needs no server; check's repository verdicts are computed with a fixed
``now``, and its server check meets a real driver (FreeTDS) and a closed port.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pitrflow.catalog.verify_records import verify_status
from pitrflow.config import CheckConfig, InstanceConfig
from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.engines.sqlserver.health import (
    catalog_checks,
    repository_checks,
    run_sqlserver_checks,
    worker_check,
)
from pitrflow.engines.sqlserver.maintenance import verify_lines
from pitrflow.engines.sqlserver.verify import verify_sqlserver
from pitrflow.errors import UsageError
from pitrflow.health import Check, failed_critical
from pitrflow.storage.fs import FsRepository
from pitrflow.storage.layout import EXPIRING_NAME
from tests.unit.sqlserver.conftest import WEEKLY, closed_port, sqlserver_instance

F2, D2 = "20240609T011000Z-F-317", "20240612T010300Z-D-324"
F3 = "20240616T011000Z-F-334"
LOG_344 = "20240620T070003Z-L-344"
# The newest log (347) finished 21 June 19:00:03; the newest differential 19 June 01:03.
NOW = datetime(2024, 6, 21, 20, 0, tzinfo=UTC)
LIMITS = CheckConfig(max_backup_age_hours=72, max_mark_age_minutes=90)


def _instance(worker_dir: Path, **changes: object) -> InstanceConfig:
    return dataclasses.replace(sqlserver_instance("Shop", worker_dir, name="shop"),
                               check=LIMITS, **changes)  # type: ignore[arg-type]


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _flip_a_byte(repo: FsRepository, key: str) -> None:
    data = bytearray(repo.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    repo.put_bytes(key, bytes(data))


def _lsns(repo: FsRepository, backup_set_id: int) -> tuple[int, int]:
    record = read_sqlserver_catalog(repo, "shop").record_for(backup_set_id)
    assert record is not None
    return record.rows[0].first_lsn, record.rows[0].last_lsn


def test_verify_of_a_sound_repository_checks_every_file_and_the_chain(
        repo: FsRepository, worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")

    results = verify_sqlserver(_instance(worker_dir), repo)

    assert len(results) == 48 and all(r.ok for r in results)
    assert sum(r.objects_checked for r in results) == 48
    newest = next(r for r in results if r.backup_id == F3)
    assert newest.log_chain == (f"log chain ok from {F3}: 12 log backups to LSN "
                                f"{_lsns(repo, 347)[1]}")
    data = newest.to_dict()
    assert data["wal_segments_checked"] == 12 and data["engine"] == "sqlserver"
    assert "pg_verifybackup" not in data
    stored = verify_status(repo, "shop", F3)
    assert stored is not None and stored["ok"] and stored["type"] == "full"
    lines = verify_lines([r.to_dict() for r in results])
    assert f"{F3} (full Shop): OK (1 file, {newest.log_chain})" in lines
    assert lines[-1] == "log backups: 41 checked (41 files), all OK"


def test_a_flipped_byte_is_named_by_backup_and_file(repo: FsRepository,
                                                    worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    _flip_a_byte(repo, f"shop/backups/{D2}/SQLPROD02_Shop_DIFF_20240612_010000.bak")

    results = verify_sqlserver(_instance(worker_dir), repo)

    bad = [r for r in results if not r.ok]
    assert [r.backup_id for r in bad] == [D2]
    assert bad[0].problems == [
        f"differential backup {D2}: object shop/backups/{D2}/"
        "SQLPROD02_Shop_DIFF_20240612_010000.bak does not match its recorded sha256"]
    assert verify_status(repo, "shop", D2)["ok"] is False  # type: ignore[index]


@pytest.mark.parametrize("what", ["the whole backup", "its file only"])
def test_a_missing_log_is_a_gap_named_by_its_lsns(repo: FsRepository, worker_dir: Path,
                                                  what: str) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    prefix = f"shop/logs/{LOG_344}/"
    for info in list(repo.list(prefix)):
        if what == "the whole backup" or not info.key.endswith("manifest.json"):
            repo.delete(info.key)
    gap_from, gap_to = _lsns(repo, 343)[1], _lsns(repo, 345)[0]

    results = verify_sqlserver(_instance(worker_dir), repo)

    problems = [p for r in results for p in r.problems]
    assert len(problems) == 1
    assert problems[0].startswith(f"log chain from {F3}: log chain broken between LSN "
                                  f"{gap_from} (end of log backup 343, finished 2024-06-19 "
                                  f"19:00:03 UTC) and LSN {gap_to} (start of log backup 345")
    assert next(r for r in results if r.backup_id == F3).problems == problems


def test_verify_of_one_backup_checks_the_chain_from_it(repo: FsRepository,
                                                       worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    instance = _instance(worker_dir)

    [result] = verify_sqlserver(instance, repo, F2)

    assert result.ok and result.objects_checked == 1
    assert result.log_chain.startswith(f"log chain ok from {F2}: 26 log backups to LSN")
    with pytest.raises(UsageError, match="backup 20990101T000000Z-F of shop cannot be "
                                         "verified: it is not in the repository"):
        verify_sqlserver(instance, repo, "20990101T000000Z-F")
    repo.put_bytes(f"shop/backups/{F2}/{EXPIRING_NAME}", b"{}")
    with pytest.raises(UsageError, match="expired by retention"):
        verify_sqlserver(instance, repo, F2)


def test_repository_checks_with_a_fixed_clock(repo: FsRepository, worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    instance = _instance(worker_dir)

    fresh, catalog = repository_checks(instance, repo, NOW)
    checks = _by_name(fresh)
    assert catalog is not None
    assert [c.name for c in fresh] == [
        "repository readable", "repository writable", "newest backup", "newest log backup",
        "log chain", "newest passing drill", "backups verified", "retention"]
    assert checks["repository readable"].detail.endswith(": 48 backup sets")
    assert checks["newest backup"].ok
    assert checks["newest backup"].detail == \
        "20240619T010300Z-D-341 (differential), 67.0 h ago"
    assert checks["newest log backup"].line() == \
        "newest log backup: OK (20240621T190003Z-L-347, 60 min ago)"
    assert checks["log chain"].ok and checks["log chain"].detail.startswith(
        f"log chain ok from {F3}")
    assert not checks["newest passing drill"].ok and not checks["newest passing drill"].critical
    assert not failed_critical(fresh)

    stale = _by_name(catalog_checks(instance, repo, catalog, NOW + timedelta(days=2)))
    assert stale["newest backup"].line() == (
        "newest backup: FAILED (newest backup 20240619T010300Z-D-341 is 115.0 h ago, over "
        "72 h: check the backup deployments)")
    assert stale["newest log backup"].line().startswith(
        "newest log backup: FAILED (the newest log backup 20240621T190003Z-L-347 is 49.0 h "
        "ago, over 90 min")


def test_a_gap_an_interrupted_expire_and_a_failed_verify_fail_their_checks(
        repo: FsRepository, worker_dir: Path) -> None:
    import_recorded_rows(WEEKLY, repo, "shop")
    instance = _instance(worker_dir)
    for info in list(repo.list(f"shop/logs/{LOG_344}/")):
        repo.delete(info.key)
    _flip_a_byte(repo, f"shop/backups/{D2}/SQLPROD02_Shop_DIFF_20240612_010000.bak")
    verify_sqlserver(instance, repo)
    repo.put_bytes(f"shop/backups/{F2}/{EXPIRING_NAME}", b"{}")

    checks = _by_name(repository_checks(instance, repo, NOW)[0])

    chain = checks["log chain"]
    assert not chain.ok and chain.critical
    assert "log chain broken between LSN" in chain.hint and "log backup 345" in chain.hint
    # D2 for its damaged file, F3 for the gap in the chain that starts from it.
    assert checks["backups verified"].hint == \
        f"verify failed for {D2}, {F3}: run pitr verify shop"
    assert checks["retention"].hint == \
        f"an expire was interrupted ({F2}): run pitr expire shop"
    assert "\n" not in "".join(c.line() for c in checks.values())


def test_an_unreachable_server_is_one_failed_line_and_the_rest_still_reports(
        repo: FsRepository, worker_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pyodbc = pytest.importorskip("pyodbc")
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("the FreeTDS ODBC driver is not installed (apt-get install unixodbc tdsodbc)")
    monkeypatch.setenv("PITR_TEST_MSSQL_PASSWORD", "not-the-password")
    import_recorded_rows(WEEKLY, repo, "shop")
    port = closed_port()
    instance = _instance(worker_dir, host="127.0.0.1", port=port)

    checks = run_sqlserver_checks(instance, repo, NOW)

    server = checks[0]
    assert server.name == "server" and not server.ok and server.critical
    assert server.line().startswith(f"server: FAILED (cannot connect to SQL Server 127.0.0.1:"
                                    f"{port} for instance shop: ")
    assert "\n" not in server.line() and "not-the-password" not in server.line()
    names = [c.name for c in checks]
    assert "database" not in names  # needs the server; not reported as if it were checked
    assert _by_name(checks)["log chain"].ok and _by_name(checks)["backup_dir_worker"].ok
    assert failed_critical(checks)


def test_worker_directory_must_exist(tmp_path: Path) -> None:
    missing = sqlserver_instance("Shop", tmp_path / "not-mounted")
    check = worker_check(missing)
    assert not check.ok and check.critical
    assert check.hint.startswith(f"backup_dir_worker {tmp_path / 'not-mounted'} is not a "
                                 "directory: mount the directory the server writes to")

    url = dataclasses.replace(missing, backup_dir_worker=None,
                              backup_dir_server="s3://minio.internal:9000/pitr/prod")
    assert worker_check(url).ok
