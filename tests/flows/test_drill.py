"""The nightly recovery drill as real Prefect flow runs against real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.recovery_drill import recovery_drill
from pitrflow.drill.record import drill_history
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import DrillFailedError
from tests.conftest import Env
from tests.flows.test_flows import _artifact


def _prepare(env: Env, checks: Path, freshness: bool = True) -> None:
    extra = f'\n[instances.main.drill]\nscratch_dir = "{env.root / "scratch"}"\n' \
            f'checks_dir = "{checks}"\n'
    if freshness:
        extra += 'freshness = { "public.items" = "at" }\nmax_lag_seconds = 600\n'
    env.config_path.write_text(env.config_path.read_text() + extra)
    for _ in range(5):
        env.commit_row()
    take_backup(env.instance, env.repo)
    ship_wal(env.instance, env.repo)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_healthy_drill_passes_and_cleans_up(env18: Env, tmp_path: Path,
                                            pitrflow_events: Callable[[], list[Any]]) -> None:
    env = env18
    checks = tmp_path / "checks"
    (checks / "main").mkdir(parents=True)
    (checks / "main" / "public.items.json").write_text(json.dumps({
        "name": "team.items", "table": "public.items",
        "expectations": [{"type": "expect_column_values_to_not_be_null",
                          "kwargs": {"column": "id"}}]}))
    _prepare(env, checks)
    result = recovery_drill(instance="main", to="random", config_path=str(env.config_path))
    assert result["passed"] is True
    assert result["target_mode"] == "random"
    assert result["window_from"] <= result["target_time"] <= result["window_to"]
    assert result["quality_checked"] >= 4
    assert result["rto_seconds"] > 0 and result["data_lag_seconds"] >= 0
    markdown = asyncio.run(_artifact("drill-main"))
    assert "PASSED" in markdown and "RTO" in markdown and "data lag" in markdown
    assert "replay_and_start" in markdown
    assert "### Verdict by table" in markdown and "| public.items | row_count |" in markdown
    table = asyncio.run(_artifact("drill-checks-main"))
    assert "team.items" in table and "expect_column_values_to_be_unique" in table
    # Scratch instance gone: directory removed, port free, no postmaster left.
    scratch = env.root / "scratch"
    assert not [p for p in scratch.iterdir() if not p.name.endswith("evidence")]
    history = drill_history(env.repo, "main")
    assert len(history) == 1 and history[0].passed
    assert history[0].target_time is not None
    evidence = Path(str(history[0].evidence))
    assert (evidence / "summary.json").exists() or any(evidence.rglob("*.json"))
    [passed] = pitrflow_events()
    assert (passed.event, passed.resource.id) == ("pitrflow.drill.passed", "pitrflow.instance.main")
    assert passed.payload["rto_seconds"] == result["rto_seconds"]
    assert passed.payload["data_lag_seconds"] == result["data_lag_seconds"]
    assert passed.payload["findings"] == []


def test_failing_team_suite_fails_loudly_and_keeps_evidence(
        env18: Env, tmp_path: Path, pitrflow_events: Callable[[], list[Any]]) -> None:
    env = env18
    checks = tmp_path / "checks"
    (checks / "main").mkdir(parents=True)
    (checks / "main" / "public.items.json").write_text(json.dumps({
        "name": "team.items.impossible", "table": "public.items",
        "expectations": [{"type": "expect_table_row_count_to_be_between",
                          "kwargs": {"min_value": 1000000}}]}))
    _prepare(env, checks, freshness=False)
    with pytest.raises(DrillFailedError, match="expect_table_row_count_to_be_between"):
        recovery_drill(instance="main", to="latest", config_path=str(env.config_path))
    history = drill_history(env.repo, "main")
    assert len(history) == 1 and not history[0].passed
    assert any("1000000" in f or "row_count" in f for f in history[0].quality_failures)
    markdown = asyncio.run(_artifact("drill-main"))
    assert "FAILED" in markdown and "team.items.impossible" in markdown
    assert history[0].evidence and Path(history[0].evidence).exists()
    [failed] = pitrflow_events()
    assert (failed.event, failed.resource.id) == ("pitrflow.drill.failed", "pitrflow.instance.main")
    assert "expect_table_row_count_to_be_between" in failed.payload["findings"][0]
    assert failed.payload["findings_count"] >= 1 and failed.payload["rto_seconds"] > 0


def test_keep_leaves_the_scratch_instance_running(env18: Env, tmp_path: Path) -> None:
    env = env18
    _prepare(env, tmp_path / "no-checks", freshness=False)
    result = recovery_drill(instance="main", to="latest", keep=True,
                            config_path=str(env.config_path))
    kept = Path(result["kept_at"])
    assert (kept / "postmaster.pid").exists()
