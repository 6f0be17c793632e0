"""Corruption that happened on the source before the backup is caught, loudly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.recovery_drill import recovery_drill
from pitrflow.devtools.localpg import LocalCluster, default_bin_dir
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import CommandFailedError, DrillFailedError
from tests.conftest import free_port, write_config


def _cluster(root: Path, checksums: bool) -> LocalCluster:
    cluster = LocalCluster(root / "src", free_port(), default_bin_dir(),
                           data_checksums=checksums)
    cluster.init()
    cluster.start()
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE victim (id int PRIMARY KEY, payload text)")
        conn.execute("INSERT INTO victim SELECT g, repeat('p', 200) "
                     "FROM generate_series(1, 5000) g")
        conn.execute("CHECKPOINT")
    return cluster


def _damage(cluster: LocalCluster, relation: str, page: int) -> str:
    with cluster.connect() as conn:
        row = conn.execute("SELECT pg_relation_filepath(%s)", (relation,)).fetchone()
    assert row is not None
    path = cluster.data_dir / str(row[0])
    cluster.stop()
    with open(path, "r+b") as handle:
        handle.seek(page * 8192 + 40)
        handle.write(b"\xff" * 64)  # smash line pointers of the page
    cluster.start()
    return str(row[0])


@pytest.fixture
def workdir(work_root: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    root = work_root / f"corrupt-{request.node.name[5:15]}"
    root.mkdir()
    yield root


def test_amcheck_catches_damage_made_before_the_backup(workdir: Path) -> None:
    cluster = _cluster(workdir, checksums=False)
    try:
        _damage(cluster, "victim_pkey", 1)
        config = write_config(workdir / "cfg", cluster, "pitrflow_corrupt",
                              f'\n[instances.main.drill]\nscratch_dir = "{workdir / "scratch"}"\n'
                              f'checks_dir = "{workdir / "none"}"\n')
        from pitrflow.storage import open_repository

        repo = open_repository(config.repository)
        take_backup(config.instance("main"), repo)
        ship_wal(config.instance("main"), repo)
        with pytest.raises(DrillFailedError, match="pg_amcheck"):
            recovery_drill(instance="main", to="latest", config_path=str(config.source))
    finally:
        cluster.remove()


def test_backup_with_checksums_fails_loudly_on_a_bad_page(workdir: Path) -> None:
    cluster = _cluster(workdir, checksums=True)
    try:
        _damage(cluster, "victim", 2)
        config = write_config(workdir / "cfg", cluster, "pitrflow_corrupt2")
        from pitrflow.storage import open_repository

        repo = open_repository(config.repository)
        with pytest.raises(CommandFailedError, match="checksum"):
            take_backup(config.instance("main"), repo)
        catalog = read_catalog(repo, "main")
        assert catalog.backups == []
    finally:
        cluster.remove()
