"""The generator, the alert definitions and the slot names, without a server.

The end-to-end module proves they work on a real Prefect server; these pin
down the edges it does not reach: several instances, refusals, secrets, and
which events each silence alert counts as a success.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from deployments import generate
from deployments.alerts import desired_automations, failed_run, ship_silence, span
from flows import _limits
from pitrflow.config import load_config
from pitrflow.errors import UsageError

CONFIG = """
[repository]
path = "repo"

[instances.main]
engine = "postgresql"
host = "db1.internal"
password_env = "PITR_MAIN_PASSWORD"

[instances.orders-db]
engine = "postgresql"
host = "db2.internal"
password_block = "orders-password"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pitrflow.toml"
    path.write_text(CONFIG)
    return path


def test_one_set_of_deployments_per_instance_with_the_schedule(config_file: Path) -> None:
    out = config_file.parent / "prefect.yaml"
    assert generate.main(["--config", str(config_file), "--out", str(out),
                          "--timezone", "Europe/Paris", "--pool", "db-backups"]) == 0
    document = yaml.safe_load(out.read_text())
    entries = {(d["entrypoint"].split(":")[1], d["name"]): d for d in document["deployments"]}
    assert len(entries) == 16
    crons = {flow: [(s["cron"], s["timezone"]) for s in entries[(flow, "orders-db")]["schedules"]]
             for flow, _ in entries}
    assert crons == {"backup_full": [("0 0 * * *", "Europe/Paris")],
                     "backup_incremental": [("0 6,12,18 * * *", "Europe/Paris")],
                     "ship_logs": [("*/15 * * * *", "Europe/Paris")],
                     "recovery_drill": [("30 2 * * *", "Europe/Paris")],
                     "restore_to_point": [],
                     "expire": [("0 1 * * *", "Europe/Paris")],
                     "verify": [("0 4 * * 0", "Europe/Paris")],
                     "check": [("5 * * * *", "Europe/Paris")]}
    for (_, instance), entry in entries.items():
        assert entry["parameters"] == {"instance": instance, "config_path": str(config_file)}
        assert entry["work_pool"] == {"name": "db-backups", "job_variables": {
            "env": {"PITRFLOW_CONCURRENCY": "strict"}}}
    text = out.read_text()
    assert "PITR_MAIN_PASSWORD" not in text and "orders-password" not in text
    pull = document["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull == {"directory": str(generate.PROJECT_ROOT)}


def test_worker_config_path_and_project_root_can_differ_from_here(config_file: Path) -> None:
    document = generate.build_prefect_yaml(load_config(config_file), project_root=Path("/opt/p"),
                                           worker_config="/etc/pitrflow/pitrflow.toml")
    assert {d["parameters"]["config_path"] for d in document["deployments"]} == {
        "/etc/pitrflow/pitrflow.toml"}
    assert document["pull"][0]["prefect.deployments.steps.set_working_directory"] == {
        "directory": "/opt/p"}


def test_refuses_unknown_time_zone_and_bad_pool_in_one_line(
        config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = config_file.parent / "prefect.yaml"
    assert generate.main(["--config", str(config_file), "--out", str(out),
                          "--timezone", "Mars/Olympus"]) == 2
    assert capsys.readouterr().err.startswith("error [usage]: unknown time zone 'Mars/Olympus'")
    with pytest.raises(UsageError, match="not a valid Prefect name"):
        generate.build_prefect_yaml(load_config(config_file), pool="a/b")
    assert not out.exists()
    assert generate.main(["--config", str(config_file.parent / "missing.toml"),
                          "--out", str(out)]) == 2


def _event(flow: str, deployment: str | None, state: str = "Completed") -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    related = [{"prefect.resource.id": f"prefect.flow.{uuid4()}",
                "prefect.resource.role": "flow", "prefect.resource.name": flow}]
    if deployment:
        related.append({"prefect.resource.id": f"prefect.deployment.{uuid4()}",
                        "prefect.resource.role": "deployment",
                        "prefect.resource.name": deployment})
    return ReceivedEvent.model_validate({
        "occurred": datetime.now(UTC), "event": f"prefect.flow-run.{state}",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{uuid4()}"},
        "related": related, "id": uuid4()})


def _server_trigger(automation: Any) -> Any:
    from prefect.server.events.schemas.automations import EventTrigger

    return EventTrigger.model_validate(automation.trigger.model_dump(mode="json"))


def test_silence_alerts_count_only_successes_of_their_own_instance_and_flows() -> None:
    wanted = {a.name: a for a in desired_automations(["main", "orders-db"], None)}
    ship = _server_trigger(wanted["pitrflow: main: no WAL ship in 30 min"])
    backup = _server_trigger(wanted["pitrflow: main: no backup in 7 h"])
    assert ship.posture == "Proactive" and ship.within == timedelta(minutes=30)
    assert ship.covers(_event("ship_logs", "main"))
    assert not ship.covers(_event("ship_logs", "orders-db"))
    assert not ship.covers(_event("ship_logs", "main", "Failed"))
    assert not ship.covers(_event("backup_full", "main"))
    assert backup.covers(_event("backup_full", "main"))
    assert backup.covers(_event("backup_incremental", "main"))
    assert not backup.covers(_event("backup_full", None))
    assert not backup.covers(_event("recovery_drill", "main"))


def test_failure_alert_covers_every_pitrflow_flow_and_nothing_else() -> None:
    trigger = _server_trigger(failed_run(None))
    for flow in ("backup_full", "backup_incremental", "ship_logs", "recovery_drill",
                 "restore_to_point"):
        assert trigger.covers(_event(flow, None, "Failed")), flow
        assert trigger.covers(_event(flow, "main", "Crashed")), flow
    assert not trigger.covers(_event("backup_full", "main", "Completed"))
    assert not trigger.covers(_event("someone_elses_flow", "main", "Failed"))


def test_alerts_send_through_the_block_when_one_is_given() -> None:
    block = uuid4()
    actions = [a.actions for a in desired_automations(["main"], block)]
    assert all([x.type for x in acts] == ["send-notification"] for acts in actions)
    assert all(acts[0].block_document_id == block for acts in actions)
    assert [a.actions[0].type for a in desired_automations(["main"], None)] == ["do-nothing"] * 4
    assert ship_silence("x", None, within=timedelta(seconds=45)).name == (
        "pitrflow: x: no WAL ship in 45 s")
    assert span(timedelta(hours=7)) == "7 h"


def test_slot_names_are_valid_prefect_names_and_tell_paths_apart() -> None:
    assert _limits.limit_name("backup", "main") == "pitrflow-backup-main"
    with pytest.raises(ValueError):
        _limits.limit_name("restore", "main")
    a, b = _limits.destination_lock_name("/srv/a-b"), _limits.destination_lock_name("/srv/a/b")
    assert a != b and a.startswith("pitrflow-restore-srv-a-b-")
    assert not set("/%&><") & set(a + b)
    assert _limits.destination_lock_name("/srv/x/") == _limits.destination_lock_name("/srv/x")


def test_without_strict_the_slots_never_touch_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv(_limits.CONCURRENCY_ENV, raising=False)
    ran = []
    # Nothing listens there: any API call would fail the test.
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with _limits.instance_slot("backup", "main"), _limits.destination_lock("/srv/x"):
            ran.append(True)
        monkeypatch.setenv(_limits.CONCURRENCY_ENV, "strict")
        with pytest.raises(ConcurrencySlotAcquisitionError), \
                _limits.instance_slot("backup", "main"):
            ran.append(False)
    assert ran == [True]


def test_deploy_and_setup_refuse_the_ephemeral_api(config_file: Path) -> None:
    """Deployments, limits and alerts made in a throwaway API would vanish with it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.deploy import deploy_all
    from deployments.setup import setup

    out = config_file.parent / "prefect.yaml"
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(UsageError, match="PREFECT_API_URL is not set"):
            setup(str(config_file))
        with pytest.raises(UsageError, match="PREFECT_API_URL is not set"):
            deploy_all(str(config_file), prefect_file=out)
    assert not out.exists()


def test_a_follow_instance_gets_a_long_running_follow_wal_deployment(tmp_path: Path) -> None:
    path = tmp_path / "pitrflow.toml"
    path.write_text('[repository]\npath = "r"\n[instances.a]\nengine = "postgresql"\nhost = "h"\n'
                    'follow = true\n[instances.b]\nengine = "postgresql"\nhost = "h"\n')
    document = generate.build_prefect_yaml(generate.load_config(path))
    follow = [d for d in document["deployments"] if d["entrypoint"].endswith(":follow_wal")]
    assert [d["name"] for d in follow] == ["a"]
    assert follow[0]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert follow[0]["schedules"][0]["cron"] == "*/5 * * * *"
    # The flow module the entry names exists and is a Prefect flow.
    from flows.follow_wal import follow_wal

    assert follow_wal.name == "follow_wal"
