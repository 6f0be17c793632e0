"""`pitr drill --to random` for SQL Server: a point drawn from the restorable window."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitrflow.engines.sqlserver.catalog import import_recorded_rows, read_sqlserver_catalog
from pitrflow.engines.sqlserver.drill import choose_target
from pitrflow.engines.sqlserver.msdb import row_times_utc
from pitrflow.engines.sqlserver.restore import prepare_restore
from pitrflow.errors import PitrError
from pitrflow.storage.fs import FsRepository
from tests.unit.sqlserver.conftest import FIXTURES, sqlserver_instance


@pytest.mark.parametrize(("fixture", "database"), [
    ("plain_chain.json", "Sales"), ("two_forks.json", "CRM"), ("weekly_retention.json", "Shop"),
    ("dst_fall_back.json", "Ledger"), ("copy_only_full.json", "Inventory"),
])
def test_every_random_point_is_inside_the_window_and_plans(tmp_path: Path, fixture: str,
                                                           database: str) -> None:
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / fixture, repo, "sales")
    catalog = read_sqlserver_catalog(repo, "sales")
    instance = sqlserver_instance(database, tmp_path)
    latest = prepare_restore(instance, catalog, None).plan
    in_fork = [r for r in catalog.records if r.rows[0].recovery_fork_guid == latest.recovery_fork]
    end = max(row_times_utc(r.rows[0])[1] for r in in_fork)
    rng = random.Random(7)
    drawn = []
    for _ in range(40):
        mode, target = choose_target(catalog, database, "random", rng)
        assert mode == "random" and target is not None and target <= end
        plan = prepare_restore(instance, catalog, target).plan  # refuses if unreachable
        assert plan.recovery_fork == latest.recovery_fork
        drawn.append(target)
    assert len(set(drawn)) == 40, "the points differ from draw to draw"


def test_latest_and_explicit_times(tmp_path: Path) -> None:
    repo = FsRepository(tmp_path / "repo")
    import_recorded_rows(FIXTURES / "plain_chain.json", repo, "sales")
    catalog = read_sqlserver_catalog(repo, "sales")
    assert choose_target(catalog, "Sales", "latest") == ("latest", None)
    assert choose_target(catalog, "Sales", None) == ("latest", None)
    assert choose_target(catalog, "Sales", "2024-03-10T00:40:00+01:00") == (
        "time", datetime(2024, 3, 9, 23, 40, tzinfo=UTC))
    with pytest.raises(PitrError, match="drill target"):
        choose_target(catalog, "Sales", "2024-03-10 00:40")


def test_random_without_backups_is_refused(tmp_path: Path) -> None:
    catalog = read_sqlserver_catalog(FsRepository(tmp_path / "repo"), "sales")
    with pytest.raises(PitrError) as caught:
        choose_target(catalog, "Sales", "random")
    assert "Sales" in caught.value.message
