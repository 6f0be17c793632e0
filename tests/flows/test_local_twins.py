"""A flow run and its run without Prefect (pitrflow.local) write the same records.

The CLI runs the core steps itself when no server is there; users must find
the same backups, marks and drill records in the repository either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from flows.backup_full import backup_full
from flows.recovery_drill import recovery_drill
from flows.ship_logs import ship_logs
from pitrflow import local
from pitrflow.config import load_config
from pitrflow.drill.record import drill_history
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from tests.conftest import Env


def _doc(env: Env, key: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(env.repo.get_bytes(key))
    return doc


def test_backup_ship_and_drill_write_the_same_records_with_and_without_prefect(
        env18: Env, tmp_path: Path) -> None:
    env = env18
    env.config_path.write_text(env.config_path.read_text() + (
        f'\n[instances.main.drill]\nscratch_dir = "{env.root / "scratch"}"\n'
        f'checks_dir = "{tmp_path / "checks"}"\n'))
    config = load_config(env.config_path)
    for _ in range(3):
        env.commit_row()

    flow_backup = backup_full(instance="main", config_path=str(env.config_path))
    local_backup = local.backup(config, "main", "full")
    env.commit_row()
    flow_ship = ship_logs(instance="main", config_path=str(env.config_path))
    env.commit_row()
    local_ship = local.ship(config, "main")

    # The same result shape, and the flow's summary is the line the CLI prints.
    assert set(flow_backup) == set(local_backup.data) | {"summary"}
    assert flow_backup["summary"].endswith("bytes stored")
    assert set(flow_ship) == set(local_ship.data) | {"summary"}

    catalog = read_catalog(env.repo, "main")
    by_id = {b.id: b for b in catalog.backups}
    first, second = by_id[flow_backup["id"]], by_id[local_backup.backup_id]
    assert {f.name for f in first.files} == {f.name for f in second.files}
    manifests = [_doc(env, f"main/backups/{b.id}/manifest.json") for b in (first, second)]
    assert set(manifests[0]) == set(manifests[1])
    assert manifests[0]["compression"] == manifests[1]["compression"]
    marks = [_doc(env, m.key) for m in catalog.marks[-2:]]
    assert len(marks) == 2 and set(marks[0]) == set(marks[1])

    flow_drill = recovery_drill(instance="main", to="latest",
                                config_path=str(env.config_path))
    local_drill = local.drill(config, "main", "latest", keep=False)
    assert flow_drill["passed"] is True and local_drill.passed is True
    records = drill_history(env.repo, "main")
    assert len(records) == 2
    assert set(records[0].to_dict()) == set(records[1].to_dict())
    assert records[0].chain == records[1].chain == [second.id]
    assert all(r.quality_checked > 0 and not r.kept_at for r in records)
    assert not any((env.root / "scratch").iterdir())  # both scratch instances are gone
