"""Shared fixtures: real PostgreSQL clusters (session scope) and per-test repositories."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from pitrflow import procs
from pitrflow.config import Config, InstanceConfig, parse_config
from pitrflow.devtools.localpg import (
    LocalCluster,
    default_bin_dir,
    system_pg15_bin_dir,
    world_traversable,
)
from pitrflow.engines.postgres.sysuser import chown_tree
from pitrflow.storage import open_repository
from pitrflow.storage.base import Repository

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# moto's S3 server and the fault proxy (fixtures s3_server, s3, make_s3_env).
pytest_plugins = ["tests.s3server"]

# Each pytest-xdist worker takes ports from a block of its own, below the kernel's
# ephemeral range (32768-60999 here), so two workers never pick the same free port
# before either has bound it, and outgoing connections never hold one.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_ports = itertools.count(20000 + (_WORKER % 2) * 6000 + (_WORKER // 2) * 600)


def free_port() -> int:
    import socket

    while True:
        port = next(_ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@pytest.fixture(scope="session")
def work_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pitrflow-tests-", dir="/tmp"))
    world_traversable(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _cluster(root: Path, name: str, bin_dir: Path, **kwargs: object) -> LocalCluster:
    cluster = LocalCluster(root / name, free_port(), bin_dir, **kwargs)  # type: ignore[arg-type]
    cluster.init()
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def pg18(work_root: Path) -> Iterator[LocalCluster]:
    cluster = _cluster(work_root, "pg18", default_bin_dir(),
                       settings={"summarize_wal": "on"})
    yield cluster
    cluster.remove()


@pytest.fixture(scope="session")
def pg15_cluster(work_root: Path) -> Iterator[LocalCluster | None]:
    bin_dir = system_pg15_bin_dir()
    if bin_dir is None:
        yield None
        return
    cluster = _cluster(work_root, "pg15", bin_dir)
    yield cluster
    cluster.remove()


@dataclass
class TablespaceCluster:
    """A cluster with two user tablespaces, ts_a and ts_b, at `locations`."""

    cluster: LocalCluster
    locations: dict[str, Path]


def _tablespace_cluster(root: Path, name: str, bin_dir: Path,
                        **kwargs: object) -> TablespaceCluster:
    cluster = _cluster(root, name, bin_dir, **kwargs)
    locations = {}
    for space in ("ts_a", "ts_b"):
        location = root / f"{name}-{space}"
        location.mkdir(mode=0o700)
        if cluster.user:
            chown_tree(location, cluster.user)
        with cluster.connect() as conn:
            conn.execute(f"CREATE TABLESPACE {space} LOCATION '{location}'")
        locations[space] = location
    return TablespaceCluster(cluster, locations)


@pytest.fixture(scope="session")
def ts18(work_root: Path) -> Iterator[TablespaceCluster]:
    found = _tablespace_cluster(work_root, "ts18", default_bin_dir(),
                                settings={"summarize_wal": "on"})
    yield found
    found.cluster.remove()


@pytest.fixture(scope="session")
def ts15(work_root: Path) -> Iterator[TablespaceCluster | None]:
    bin_dir = system_pg15_bin_dir()
    if bin_dir is None:
        yield None
        return
    found = _tablespace_cluster(work_root, "ts15", bin_dir)
    yield found
    found.cluster.remove()


@pytest.fixture(params=["18", "15"], ids=["pg18", "pg15"])
def ts_pg(request: pytest.FixtureRequest) -> TablespaceCluster:
    if request.param == "18":
        return request.getfixturevalue("ts18")
    found = request.getfixturevalue("ts15")
    if found is None:
        pytest.skip("system PostgreSQL 15 binaries are not installed (/usr/lib/postgresql/15)")
    return found


@pytest.fixture(params=["18", "15"], ids=["pg18", "pg15"])
def pg(request: pytest.FixtureRequest) -> LocalCluster:
    if request.param == "18":
        return request.getfixturevalue("pg18")
    cluster = request.getfixturevalue("pg15_cluster")
    if cluster is None:
        pytest.skip("system PostgreSQL 15 binaries are not installed (/usr/lib/postgresql/15)")
    return cluster


_names = itertools.count(1)


@dataclass
class Env:
    """One test's view: a cluster, a fresh repository, a config file naming both."""

    cluster: LocalCluster
    config: Config
    root: Path

    @property
    def instance(self) -> InstanceConfig:
        return self.config.instance("main")

    @property
    def repo(self) -> Repository:
        return open_repository(self.config.repository)

    @property
    def config_path(self) -> Path:
        return self.config.source

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.cluster.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def commit_row(self, table: str = "items") -> tuple[int, datetime]:
        """Insert one row in its own transaction; return its id and a time just after commit."""
        with self.cluster.connect() as conn:
            row = conn.execute(f"INSERT INTO {table}(note) VALUES ('x') RETURNING id").fetchone()
            after = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None and after is not None
        time.sleep(0.01)
        return int(row[0]), after[0]


def write_config(root: Path, cluster: LocalCluster, slot: str, extra: str = "",
                 repo_extra: str = "") -> Config:
    """`extra` lines go into [instances.main], `repo_extra` lines into [repository]."""
    root.mkdir(parents=True, exist_ok=True)
    text = f"""
[repository]
path = "{root / 'repo'}"
{repo_extra}

[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {cluster.port}
user = "postgres"
database = "postgres"
slot = "{slot}"
bin_dir = "{cluster.bin_dir}"
staging_dir = "{root / 'staging'}"
{extra}
"""
    path = root / "pitr.toml"
    path.write_text(text)
    return parse_config(text, path)


def drop_slot(cluster: LocalCluster, slot: str) -> None:
    with cluster.connect() as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name = %s AND NOT active", (slot,))


@pytest.fixture
def make_env(work_root: Path) -> Iterator:  # type: ignore[type-arg]
    created: list[tuple[LocalCluster, str, str]] = []

    def factory(cluster: LocalCluster, extra: str = "", repo_extra: str = "") -> Env:
        n = next(_names)
        slot = f"pitrflow_test_{n}"
        table = "items"
        root = work_root / f"t{n}"
        config = write_config(root, cluster, slot, extra, repo_extra)
        with cluster.connect() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, note text, "
                         "at timestamptz DEFAULT clock_timestamp())")
        created.append((cluster, slot, str(root)))
        return Env(cluster, config, root)

    yield factory
    for cluster, slot, root in created:
        _stop_restored(cluster, Path(root))
        drop_slot(cluster, slot)
        shutil.rmtree(root, ignore_errors=True)


def _stop_restored(cluster: LocalCluster, root: Path) -> None:
    """Stop every instance a test restored under its folder (and left running for the user)."""
    if not root.is_dir():
        return
    for pid_file in list(root.glob("*/postmaster.pid")) + list(root.glob("*/*/postmaster.pid")):
        procs.run([cluster.tool("pg_ctl"), "stop", "-D", str(pid_file.parent), "-m",
                   "immediate", "-w"], user=cluster.user, check=False, what="pg_ctl")


@pytest.fixture
def env(pg: LocalCluster, make_env) -> Env:  # type: ignore[no-untyped-def]
    return make_env(pg)


@pytest.fixture
def env18(pg18: LocalCluster, make_env) -> Env:  # type: ignore[no-untyped-def]
    return make_env(pg18)


def restored_ids(port: int, table: str = "items") -> list[int]:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]
