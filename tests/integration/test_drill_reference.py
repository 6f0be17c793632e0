"""Drills judged against the source as it was at the target, on a real PostgreSQL 18.

One chain for the whole module: a backup, then six ship runs while `grows`
triples, `shrinks` loses two thirds of its rows (DELETE-heavy, a few
inserts too) and `late` is created half way.  Twenty targets drawn at random
from the recoverable window are each restored and judged by the drill's own
steps (prepare, the core restore, quality), at the default tolerance: all
must pass.  Then a restore damaged before its checks must fail, naming the
table and the baseline.

Each target gets its own restore (about two seconds on this chain) because a
restored instance holds one moment only; the Prefect flow around these same
steps is exercised in tests/flows/test_drill_reference.py.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from pitrflow.config import Config, parse_config
from pitrflow.devtools.localpg import LocalCluster
from pitrflow.drill.record import DrillRecord
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.drill import run
from pitrflow.engines.postgres.drill.target import choose_target
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.storage import open_repository
from tests.conftest import drop_slot, free_port

DATABASE = "drillref"
SLOT = "pitrflow_drill_reference"
DRAWS = 20


@dataclass
class Chain:
    cluster: LocalCluster
    config: Config
    root: Path
    marks: list[datetime]


def _config(root: Path, cluster: LocalCluster) -> Config:
    root.mkdir(parents=True, exist_ok=True)
    text = f"""
[repository]
path = "{root / 'repo'}"

[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {cluster.port}
user = "postgres"
database = "{DATABASE}"
slot = "{SLOT}"
bin_dir = "{cluster.bin_dir}"

[instances.main.drill]
scratch_dir = "{root / 'scratch'}"
checks_dir = "{root / 'no-checks'}"
freshness = {{ "public.grows" = "at", "public.shrinks" = "at", "public.late" = "at" }}
"""
    (root / "pitr.toml").write_text(text)
    return parse_config(text, root / "pitr.toml")


def _round(conn: psycopg.Connection, number: int) -> None:
    """One stretch of workload between ship runs, many small transactions."""
    for _ in range(5):
        conn.execute("INSERT INTO grows (note) SELECT 'g' FROM generate_series(1, 7)")
        time.sleep(0.05)
    for _ in range(4):
        conn.execute("DELETE FROM shrinks WHERE id IN (SELECT id FROM shrinks ORDER BY id "
                     "LIMIT 8)")
        time.sleep(0.05)
    conn.execute("INSERT INTO shrinks DEFAULT VALUES")
    if number == 3:
        conn.execute("CREATE TABLE late (id bigserial PRIMARY KEY, "
                     "at timestamptz NOT NULL DEFAULT clock_timestamp())")
    if number >= 3:
        conn.execute("INSERT INTO late SELECT FROM generate_series(1, 10)")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def chain(pg18: LocalCluster, work_root: Path) -> Iterator[Chain]:
    root = work_root / "drill-reference"
    with pg18.connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    config = _config(root, pg18)
    instance = config.instance("main")
    repo = open_repository(config.repository)
    marks = []
    try:
        with pg18.connect(DATABASE) as conn:
            conn.execute("CREATE TABLE grows (id bigserial PRIMARY KEY, note text, "
                         "at timestamptz NOT NULL DEFAULT clock_timestamp())")
            conn.execute("CREATE INDEX ON grows (at)")
            conn.execute("CREATE TABLE shrinks (id bigserial PRIMARY KEY, "
                         "at timestamptz NOT NULL DEFAULT clock_timestamp())")
            conn.execute("INSERT INTO grows (note) SELECT 'g' FROM generate_series(1, 100)")
            conn.execute("INSERT INTO shrinks SELECT FROM generate_series(1, 300)")
            take_backup(instance, repo)
            for number in range(1, 7):
                _round(conn, number)
                marks.append(ship_wal(instance, repo).mark.time)
            counts = conn.execute("SELECT (SELECT count(*) FROM grows), "
                                  "(SELECT count(*) FROM shrinks)").fetchone()
        assert counts == (310, 114)  # tripled; lost over 60% of its rows
        yield Chain(pg18, config, root, marks)
    finally:
        drop_slot(pg18, SLOT)
        with pg18.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        shutil.rmtree(root, ignore_errors=True)


def drill(config: Config, to: str,
          damage: Callable[[psycopg.Connection], None] | None = None) -> DrillRecord:
    """The drill's own steps without Prefect: prepare, restore, (damage), judge, tear down."""
    repo = open_repository(config.repository)
    ctx = run.prepare(config, "main", to)
    plan = plan_restore(read_catalog(repo, "main"), RestoreTarget(ctx.target.time))
    # A port from this test run's own range: other runs on the machine restore too.
    request = RestoreRequest(config.instance("main"), ctx.scratch, free_port(),
                             config_file=config.source, scratch=True)
    outcome = execute_restore(plan, request, repo)
    restored = {"socket_dir": str(outcome.socket_dir), "port": outcome.port,
                "server_version": plan.backup.server_version}
    try:
        if damage is not None:
            with psycopg.connect(host=str(outcome.socket_dir), port=outcome.port,
                                 user="postgres", dbname=DATABASE, autocommit=True) as conn:
                damage(conn)
        report = run.quality(config, ctx, restored)
        ctx.record.quality_checked = len(report.rows)
        ctx.record.quality_failures = [row.one_line() for row in report.failures]
    finally:
        run.teardown(config, ctx, restored, keep=False)
        shutil.rmtree(ctx.evidence_dir, ignore_errors=True)
    return ctx.record


def _verdict(record: DrillRecord, table: str, check: str) -> dict[str, str]:
    found = [v for v in record.tables if v["table"] == table and v["check"] == check]
    assert len(found) == 1, (table, check, record.tables)
    return found[0]


def test_twenty_random_targets_all_pass_at_the_default_tolerance(chain: Chain) -> None:
    assert chain.config.instance("main").drill.row_count_tolerance == 0.2  # the default
    catalog = read_catalog(open_repository(chain.config.repository), "main")
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    targets = sorted(choose_target(catalog, "random", rng).time for _ in range(DRAWS))
    judged_by_baselines = 0
    for target in targets:
        assert target is not None
        record = drill(chain.config, target.isoformat())
        context = f"seed {seed}, target {target.isoformat()}: {record.quality_failures}"
        assert record.passed, context
        grows = _verdict(record, "public.grows", "row_count")
        assert grows["result"] == "pass" and grows["restored"].isdigit(), context
        if record.reference.startswith("judged against the source as recorded"):
            judged_by_baselines += 1
            low, _, high = grows["bounds"].partition("..")
            assert int(low) <= int(grows["restored"]) <= int(high or low), context
        late = [v["result"] for v in record.tables if v["table"] == "public.late"]
        if target < chain.marks[1]:
            # Not created yet: unknown to both baselines, or only to the earlier one.
            assert late in ([], ["skipped"]), context
    # Only a target in the moment between the backup and its own baseline has none before.
    assert judged_by_baselines >= DRAWS - 2, judged_by_baselines


def _between(chain: Chain, earlier: int) -> str:
    """A target half way between two ship runs, where every table was changing."""
    a, b = chain.marks[earlier], chain.marks[earlier + 1]
    return (a + (b - a) / 2).isoformat()


def test_a_table_created_between_the_marks_is_named_not_failed(chain: Chain) -> None:
    record = drill(chain.config, _between(chain, 1))  # `late` appears in round 3
    assert record.passed, record.quality_failures
    [late] = [v for v in record.tables if v["table"] == "public.late"]
    assert late["result"] == "skipped"
    assert late["why"].startswith("created after mark ")


def test_rows_removed_before_the_checks_fail_naming_table_and_baseline(chain: Chain) -> None:
    record = drill(chain.config, _between(chain, 2),
                   damage=lambda conn: conn.execute("DELETE FROM grows WHERE id % 2 = 0"))
    assert not record.passed
    [failure] = [f for f in record.quality_failures if "public.grows" in f and "row_count" in f]
    assert "(reference: mark " in failure and " .. mark " in failure
    verdict = _verdict(record, "public.grows", "row_count")
    assert verdict["result"] == "FAIL" and verdict["reference"].startswith("mark ")


def test_a_truncated_table_fails_naming_table_and_baseline(chain: Chain) -> None:
    record = drill(chain.config, _between(chain, 3),
                   damage=lambda conn: conn.execute("TRUNCATE shrinks"))
    assert not record.passed
    [failure] = [f for f in record.quality_failures
                 if "public.shrinks" in f and "expect_table_row_count_to_be_between" in f]
    assert "observed=0" in failure and "(reference: mark " in failure
    # Its freshness fails too: no newest value at all.
    assert any("public.shrinks" in f and "expect_column_max_to_be_between" in f
               for f in record.quality_failures)


def test_freshness_older_than_the_mark_before_fails(chain: Chain) -> None:
    record = drill(chain.config, _between(chain, 3),
                   damage=lambda conn: conn.execute("UPDATE grows SET at = at - interval '1 hour'"))
    assert not record.passed
    [failure] = record.quality_failures
    assert "public.grows" in failure and "expect_column_max_to_be_between(at)" in failure
    assert "(reference: mark " in failure
    verdict = _verdict(record, "public.grows", "freshness")
    assert verdict["result"] == "FAIL" and verdict["why"].startswith("newest at at mark ")
    assert _verdict(record, "public.grows", "row_count")["result"] == "pass"
