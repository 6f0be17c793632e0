"""`pitr repo cleanup` on a SQL Server instance: orphans go, sealed backups stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.storage.cleanup import execute_cleanup, plan_cleanup
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES


def test_interrupted_sqlserver_backups_are_cleaned_and_sealed_ones_kept(tmp_path: Path) -> None:
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    before = read_sqlserver_catalog(repo, "sales")
    sealed = {info.key for info in repo.list("sales/")}
    # What interrupted runs leave: a log backup and a full without manifests, and a stray
    # object beside a sealed backup's files.
    repo.put_bytes("sales/logs/20990101T000000Z-L/sales_20990101T000000Z-L.trn", b"partial")
    repo.put_bytes("sales/backups/20990101T000000Z-F/sales_20990101T000000Z-F.bak", b"partial")
    first = before.records[0]
    stray = f"{first.key('stray.bak').rsplit('/', 1)[0]}/stray.bak"
    repo.put_bytes(stray, b"?")

    later = datetime.now(UTC) + timedelta(days=2)
    plan = plan_cleanup(repo, "sales", older_than=timedelta(days=1), now=later)
    removed = {r.key for r in plan.removals}
    assert removed == {"sales/logs/20990101T000000Z-L/sales_20990101T000000Z-L.trn",
                       "sales/backups/20990101T000000Z-F/sales_20990101T000000Z-F.bak",
                       stray}
    execute_cleanup(repo, plan)
    assert {info.key for info in repo.list("sales/")} == sealed
    after = read_sqlserver_catalog(repo, "sales")
    assert [r.id for r in after.records] == [r.id for r in before.records]
    assert after.rejected == {}

    recent = plan_cleanup(repo, "sales", older_than=timedelta(days=1))
    assert recent.empty
