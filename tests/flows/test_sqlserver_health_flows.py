"""expire, verify and check of a SQL Server instance as real Prefect flow runs.

The repository holds recorded msdb rows (placeholder files with real SHA-256), so no
SQL Server is needed except for check's server group, which meets a closed port.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from flows.check import check
from flows.expire import expire
from flows.verify import verify
from pitrflow.cli import main
from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.errors import CheckFailedError, VerifyFailedError
from pitrflow.storage.fs import FsRepository
from tests.flows.test_flows import _artifact
from tests.unit.sqlserver.conftest import WEEKLY, closed_port, write_config

F3 = "20240616T011000Z-F-334"
D3 = "20240619T010300Z-D-341"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, FsRepository]:
    monkeypatch.setenv("PITR_TEST_MSSQL_PASSWORD", "not-the-password")
    config = write_config(tmp_path, port=closed_port(),
                          extra="[instances.shop.retention]\nfull_count = 1\n")
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(WEEKLY, repo, "shop")
    return str(config), repo


def test_expire_flow_plans_then_deletes_for_sqlserver(shop: tuple[str, FsRepository]) -> None:
    config, repo = shop

    planned = expire(instance="shop", dry_run=True, config_path=config)

    assert "skipped" not in planned and planned["engine"] == "sqlserver"
    assert len(planned["planned_deletions"]) == 34 and planned["deleted_backups"] == []
    assert len(read_sqlserver_catalog(repo, "shop").records) == 48
    markdown = asyncio.run(_artifact("expire-shop"))
    assert "Expire plan (dry run): shop" in markdown and "(SQL Server)" in markdown

    done = expire(instance="shop", config_path=config)

    assert sorted(done["deleted_backups"]) == sorted(planned["planned_deletions"])
    assert done["logs_deleted"] == 29 and done["bytes_freed"] > 0
    left = sorted(r.id for r in read_sqlserver_catalog(repo, "shop").records)
    assert left == sorted(done["kept"]) and F3 in left and D3 in left
    assert "Expired: shop" in asyncio.run(_artifact("expire-shop"))


def test_verify_and_check_flows_for_sqlserver(shop: tuple[str, FsRepository]) -> None:
    pyodbc = pytest.importorskip("pyodbc")  # the server check really connects (and fails)
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("the FreeTDS ODBC driver is not installed (apt-get install unixodbc tdsodbc)")
    config, repo = shop

    results = verify(instance="shop", config_path=config)

    assert len(results) == 48 and all(r["ok"] for r in results)
    newest = next(r for r in results if r["backup_id"] == F3)
    assert newest["log_chain"].startswith(f"log chain ok from {F3}: 12 log backups")
    table = asyncio.run(_artifact("verify-shop"))
    assert F3 in table and "41 log backups" in table

    with pytest.raises(CheckFailedError, match="check of shop failed: server, newest backup"):
        check(instance="shop", config_path=config)
    text = asyncio.run(_artifact("check-shop"))
    assert "server: FAILED (cannot connect to SQL Server 127.0.0.1:" in text
    assert "log chain: OK" in text and "backups verified: OK" in text

    key = f"shop/backups/{D3}/SQLPROD02_Shop_DIFF_20240619_010000.bak"
    data = bytearray(repo.get_bytes(key))
    data[0] ^= 0xFF
    repo.put_bytes(key, bytes(data))
    with pytest.raises(VerifyFailedError, match=f"differential backup {D3}: object {key} does "
                                                "not match its recorded sha256"):
        verify(instance="shop", config_path=config)


def test_cli_verify_and_expire_run_the_flows_for_sqlserver(
        shop: tuple[str, FsRepository], capsys: pytest.CaptureFixture[str]) -> None:
    config, repo = shop

    assert main(["--config", config, "verify", "shop"]) == 0
    out = capsys.readouterr().out
    assert f"{F3} (full Shop): OK (1 file, log chain ok from {F3}: 12 log backups" in out
    assert "log backups: 41 checked (41 files), all OK" in out
    assert "pg_verifybackup" not in out

    assert main(["--config", config, "expire", "shop"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("expire plan for shop (SQL Server)\n")
    assert re.search(r"\ndeleted 34 backup sets \(29 of them log backups\), [1-9]\d* bytes "
                     r"freed$", out.rstrip())
    assert len(read_sqlserver_catalog(repo, "shop").records) == 14
