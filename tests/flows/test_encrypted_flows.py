"""The flows on an encrypted repository: backup, ship and the nightly drill, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.recovery_drill import recovery_drill
from pitrflow.drill.record import drill_history
from tests.conftest import Env
from tests.encryption import assert_all_encrypted, stored_fs, with_passphrase
from tests.flows.test_drill import _prepare


def test_drill_passes_on_an_encrypted_repository(env18: Env, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = with_passphrase(env18, monkeypatch)
    checks = tmp_path / "checks"
    (checks / "main").mkdir(parents=True)
    (checks / "main" / "public.items.json").write_text(json.dumps({
        "name": "team.items", "table": "public.items",
        "expectations": [{"type": "expect_column_values_to_not_be_null",
                          "kwargs": {"column": "id"}}]}))
    _prepare(env, checks)
    result = recovery_drill(instance="main", to="random", config_path=str(env.config_path))
    assert result["passed"] is True and result["quality_checked"] >= 4
    history = drill_history(env.repo, "main")
    assert len(history) == 1 and history[0].passed
    assert_all_encrypted(stored_fs(env))  # the drill record and its evidence included
    assert any("/drills/" in key for key in stored_fs(env))
