"""The recovery drill flow judges against the source as it was at the target.

Real Prefect runs, real PostgreSQL 18, real GX, the default tolerance: a
chain whose table grows passes at a random target, says per table what it
was judged against, keeps that in the drill record, and states its fallback
when the target is older than every baseline; a restore damaged before its
checks fails the flow, naming the table and the baseline.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import pytest

from flows.recovery_drill import recovery_drill
from pitrflow.drill.record import drill_history
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.drill import run
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import DrillFailedError
from pitrflow.render import drill_history_text
from tests.conftest import Env
from tests.flows.test_flows import _artifact


def _configure(env: Env) -> None:
    env.config_path.write_text(env.config_path.read_text() + (
        f'\n[instances.main.drill]\nscratch_dir = "{env.root / "scratch"}"\n'
        f'checks_dir = "{env.root / "no-checks"}"\n'
        'freshness = { "public.items" = "at" }\n'))


def _grow(env: Env, rows: int) -> None:
    for _ in range(rows):
        env.commit_row()


def test_a_growing_table_passes_at_a_random_target_and_says_why(env18: Env) -> None:
    env = env18
    _configure(env)
    _grow(env, 10)
    take_backup(env.instance, env.repo)
    for _ in range(3):
        _grow(env, 10)  # 10 -> 40 rows over the window: four times the first count
        ship_wal(env.instance, env.repo)

    result = recovery_drill(instance="main", to="random", config_path=str(env.config_path))

    assert result["passed"] is True
    markdown = asyncio.run(_artifact("drill-main"))
    assert "### Verdict by table" in markdown
    assert "Reference: " in markdown
    assert "| public.items | row_count |" in markdown and "| pass |" in markdown
    table = asyncio.run(_artifact("drill-checks-main"))
    assert "reference" in table and "expected" in table
    [record] = drill_history(env.repo, "main")
    assert record.reference and record.tables
    rows = [v for v in record.tables if v["table"] == "public.items"]
    assert {v["check"] for v in rows} >= {"row_count", "freshness", "keys and NOT NULL"}
    assert all(v["result"] == "pass" for v in rows), rows
    assert "drills (oldest first)" in drill_history_text([record])  # pitr info's history


def test_a_target_before_the_first_baseline_passes_with_the_fallback_stated(env18: Env) -> None:
    env = env18
    _configure(env)
    _grow(env, 20)
    backup = take_backup(env.instance, env.repo).manifest
    # A repository from before baselines existed: the backup's is not there.
    [own] = read_catalog(env.repo, "main").baselines
    env.repo.delete(own.key)
    time.sleep(1.5)  # room for a target after the backup and before any baseline
    _grow(env, 2)
    ship_wal(env.instance, env.repo)

    result = recovery_drill(instance="main", to=_after(backup.stop_time),
                            config_path=str(env.config_path))

    assert result["passed"] is True
    markdown = asyncio.run(_artifact("drill-main"))
    assert "Reference: no baseline was recorded at or before the target" in markdown
    assert "with the old tolerance" in markdown
    [record] = drill_history(env.repo, "main")
    assert record.reference.startswith("no baseline was recorded at or before the target")
    [rows] = [v for v in record.tables if v["table"] == "public.items"
              and v["check"] == "row_count"]
    assert rows["reference"].startswith("fallback: mark ") and rows["result"] == "pass"


def _after(moment: datetime) -> str:
    return (moment + timedelta(milliseconds=500)).isoformat()


def test_a_restore_damaged_before_its_checks_fails_the_flow(env18: Env,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    env = env18
    _configure(env)
    _grow(env, 10)
    take_backup(env.instance, env.repo)
    _grow(env, 10)
    ship_wal(env.instance, env.repo)
    real_quality = run.quality

    def damaged_quality(config, ctx, restored):  # type: ignore[no-untyped-def]
        # The test hook: the scratch instance loses rows between restore and checks.
        import psycopg

        with psycopg.connect(host=restored["socket_dir"], port=int(restored["port"]),
                             user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute("DELETE FROM items WHERE id % 4 <> 0")
        return real_quality(config, ctx, restored)

    monkeypatch.setattr(run, "quality", damaged_quality)
    with pytest.raises(DrillFailedError) as failed:
        recovery_drill(instance="main", to="latest", config_path=str(env.config_path))
    message = failed.value.message
    assert "pitrflow.generated.public.items: expect_table_row_count_to_be_between" in message
    # Judged between the backup's baseline and the source read after the restore.
    assert "(reference: backup " in message and "the source as read at drill time" in message
    markdown = asyncio.run(_artifact("drill-main"))
    assert "FAILED" in markdown and "| public.items | row_count |" in markdown
    assert "| FAIL |" in markdown
