"""The desired deployments, prefect.yaml, the fleet's alerts and the slot names, without a
server.

The end-to-end modules prove they work on a real Prefect server; these pin
down the edges they do not reach: schedules spread to the second, refusals,
secrets, and which events each fleet alert counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from dateutil.rrule import rrulestr

from deployments import generate
from deployments.alerts import (
    desired_automations,
    failed_check,
    failed_drill,
    failed_run,
    ship_silence,
    span,
)
from deployments.desired import desired_deployments
from deployments.register import fingerprint
from deployments.specs import FLOWS, Cadence, instance_offset
from flows import _limits
from pitrflow.config import load_config, parse_config
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


def _next(rule: str, after: datetime, count: int = 1) -> list[datetime]:
    dates = rrulestr(rule, dtstart=datetime(2026, 1, 5))  # a Monday
    found, moment = [], after
    for _ in range(count):
        moment = dates.after(moment)
        found.append(moment)
    return found


def test_one_set_of_deployments_per_instance_with_spread_schedules(config_file: Path) -> None:
    out = config_file.parent / "prefect.yaml"
    assert generate.main(["--config", str(config_file), "--out", str(out),
                          "--timezone", "Europe/Paris", "--pool", "db-backups"]) == 0
    document = yaml.safe_load(out.read_text())
    entries = {(d["entrypoint"].split(":")[1], d["name"]): d for d in document["deployments"]}
    assert len(entries) == 16
    offset = instance_offset("orders-db", timedelta(minutes=60))
    assert timedelta(0) < offset < timedelta(minutes=60)
    day = datetime(2026, 3, 2)  # a Monday, midnight
    firsts = {}
    for flow in ("backup_full", "backup_incremental", "ship_logs", "recovery_drill", "expire",
                 "check", "verify"):
        [schedule] = entries[(flow, "orders-db")]["schedules"]
        assert schedule["timezone"] == "Europe/Paris" and schedule["active"] is True
        firsts[flow] = _next(schedule["rrule"], day - timedelta(seconds=1), 4)
    # The seed's day, every flow shifted by the instance's one offset (modulo its period).
    assert firsts["backup_full"][0] == day + offset
    assert [d - day for d in firsts["backup_incremental"][:3]] == [
        timedelta(hours=h) + offset for h in (6, 12, 18)]
    assert firsts["recovery_drill"][0] == day + timedelta(hours=2, minutes=30) + offset
    assert firsts["expire"][0] == day + timedelta(hours=1) + offset
    ship = [d - day for d in firsts["ship_logs"]]
    assert ship[0] == offset % timedelta(minutes=15)
    assert {b - a for a, b in zip(ship, ship[1:], strict=False)} == {timedelta(minutes=15)}
    assert firsts["check"][0] - day == (timedelta(minutes=5) + offset) % timedelta(hours=1)
    assert firsts["verify"][0] == day + timedelta(days=6, hours=4) + offset  # Sunday 04:00
    assert entries[("restore_to_point", "orders-db")]["schedules"] == []
    assert entries[("restore_to_point", "main")]["work_pool"]["work_queue_name"] == "restores"
    assert entries[("ship_logs", "main")]["concurrency_limit"] == {
        "limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert "concurrency_limit" not in entries[("backup_full", "main")]
    for (_, instance), entry in entries.items():
        assert entry["parameters"] == {"instance": instance, "config_path": str(config_file)}
        assert entry["work_pool"]["name"] == "db-backups"
        assert entry["work_pool"]["job_variables"] == {"env": {"PITRFLOW_CONCURRENCY": "strict"}}
        assert {"pitrflow", "pitrflow-managed", f"pitrflow-instance-{instance}"} == set(
            entry["tags"])
    text = out.read_text()
    assert "PITR_MAIN_PASSWORD" not in text and "orders-password" not in text
    pull = document["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull == {"directory": str(generate.PROJECT_ROOT)}


def test_offsets_are_stable_spread_to_the_second_and_off_with_zero_spread() -> None:
    spread = timedelta(minutes=60)
    names = [f"db-{i:03d}" for i in range(200)]
    offsets = [instance_offset(name, spread) for name in names]
    assert offsets == [instance_offset(name, spread) for name in names]
    assert all(timedelta(0) <= o < spread and o.microseconds == 0 for o in offsets)
    # 200 fulls over 3,600 seconds: a handful may share a second, never a crowd.
    assert len(set(offsets)) >= 190
    assert {instance_offset(name, timedelta(0)) for name in names} == {timedelta(0)}
    text = CONFIG + "\n[schedules]\nspread_minutes = 0\n"
    config = parse_config(text, Path("/etc/pitrflow.toml"))
    plain = {d.key: d.rrule for d in desired_deployments(config, pool="p", timezone="UTC")}
    assert plain["backup_full/main"] == "FREQ=DAILY;BYHOUR=0;BYMINUTE=0;BYSECOND=0"
    assert plain["ship_logs/main"] == "FREQ=HOURLY;BYMINUTE=0,15,30,45;BYSECOND=0"
    assert plain["verify/main"] == "FREQ=WEEKLY;BYDAY=SU;BYHOUR=4;BYMINUTE=0;BYSECOND=0"
    with pytest.raises(ValueError, match="not one RRULE"):
        Cadence(timedelta(days=1), (timedelta(hours=1), timedelta(hours=2, minutes=5))).rrule()


def test_fingerprint_changes_with_what_is_registered_and_only_then(config_file: Path) -> None:
    config = load_config(config_file)
    schema: dict[str, Any] = {"properties": {"instance": {"type": "string"}}}
    first = [fingerprint(d, schema) for d in desired_deployments(config, pool="p",
                                                                  timezone="UTC")]
    again = [fingerprint(d, schema) for d in desired_deployments(config, pool="p",
                                                                  timezone="UTC")]
    assert first == again and len(set(first)) == len(first)
    moved = [fingerprint(d, schema) for d in desired_deployments(config, pool="p",
                                                                  timezone="Europe/Paris")]
    restore = [i for i, d in enumerate(desired_deployments(config, pool="p", timezone="UTC"))
               if d.rrule is None]
    assert [i for i, (a, b) in enumerate(zip(first, moved, strict=True)) if a == b] == restore
    assert fingerprint(desired_deployments(config, pool="p", timezone="UTC")[0], {}) != first[0]


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


def _event(name: str, resource: str, **payload: Any) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent.model_validate({
        "occurred": datetime.now(UTC), "event": name,
        "resource": {"prefect.resource.id": resource,
                     "prefect.resource.name": resource.rpartition(".")[2]},
        "payload": payload, "id": uuid4()})


def _flow_run_event(flow: str, state: str) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent.model_validate({
        "occurred": datetime.now(UTC), "event": f"prefect.flow-run.{state}",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{uuid4()}"},
        "related": [{"prefect.resource.id": f"prefect.flow.{uuid4()}",
                     "prefect.resource.role": "flow", "prefect.resource.name": flow}],
        "id": uuid4()})


def _server_trigger(automation: Any) -> Any:
    from prefect.server.events.schemas.automations import EventTrigger

    return EventTrigger.model_validate(automation.trigger.model_dump(mode="json"))


def test_five_automations_cover_any_fleet_one_window_per_instance() -> None:
    wanted = {a.name: a for a in desired_automations(None)}
    assert set(wanted) == {"pitrflow: a run failed", "pitrflow: a recovery drill failed",
                           "pitrflow: a health check failed", "pitrflow: no WAL ship in 30 min",
                           "pitrflow: no backup in 7 h"}
    ship = _server_trigger(wanted["pitrflow: no WAL ship in 30 min"])
    backup = _server_trigger(wanted["pitrflow: no backup in 7 h"])
    assert ship.posture == "Proactive" and ship.within == timedelta(minutes=30)
    assert ship.for_each == {"prefect.resource.id"}
    for instance in ("main", "orders-db", "db-199"):
        resource = f"pitrflow.instance.{instance}"
        shipped = _event("pitrflow.wal.shipped", resource)
        backed_up = _event("pitrflow.backup.completed", resource)
        assert ship.covers(shipped) and ship.expects(shipped.event)
        assert ship.starts_after(shipped.event)  # each success restarts the window
        assert not ship.covers(backed_up)
        assert backup.covers(backed_up) and not backup.covers(shipped)
        assert ship.bucketing_key(shipped) == (resource,)
    deployed = _event("pitrflow.instance.deployed", "pitrflow.instance.new")
    removed = _event("pitrflow.instance.removed", "pitrflow.instance.gone")
    for trigger in (ship, backup):
        # A deploy opens a window without counting as a success; a removal closes one.
        assert trigger.starts_after(deployed.event) and not trigger.expects(deployed.event)
        assert trigger.expects(removed.event) and not trigger.starts_after(removed.event)
    assert not ship.covers(_event("pitrflow.wal.shipped", "prefect.flow-run.x"))


def test_drill_and_check_alerts_react_to_their_events_only() -> None:
    drill = _server_trigger(failed_drill(None))
    check = _server_trigger(failed_check(None))
    assert drill.covers(_event("pitrflow.drill.failed", "pitrflow.instance.main"))
    assert not drill.covers(_event("pitrflow.drill.passed", "pitrflow.instance.main"))
    assert check.covers(_event("pitrflow.check.failed", "pitrflow.instance.main"))
    assert check.for_each == {"prefect.resource.id"} and check.within == timedelta(hours=6)
    assert not check.covers(_event("pitrflow.drill.failed", "pitrflow.instance.main"))


def _render(template: str, event: Any) -> str:
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.events.schemas.labelling import LabelDiver
    from prefect.server.utilities.user_templates import (
        register_user_template_filters,
        render_user_template_sync,
    )

    register_user_template_filters(all_filters)
    return render_user_template_sync(template, {
        "event": event, "labels": LabelDiver({"prefect.resource.id": event.resource.id})})


def test_alert_texts_name_the_instance_and_the_evidence() -> None:
    block = uuid4()
    drill = failed_drill(block).actions[0]
    event = _event("pitrflow.drill.failed", "pitrflow.instance.orders-db",
                   findings=["amcheck: bad page", "team.orders failed"], findings_count=2,
                   rto_seconds=41.5, record_key="orders-db/drills/x.json")
    assert _render(drill.subject, event) == "pitrflow: orders-db: recovery drill failed"
    body = _render(drill.body, event)
    assert "amcheck: bad page; team.orders failed (2 finding(s); RTO 41.5 s)" in body
    assert "drill-orders-db artifact" in body and "orders-db/drills/x.json" in body
    check = failed_check(block).actions[0]
    event = _event("pitrflow.check.failed", "pitrflow.instance.main",
                   failed=["replication slot", "newest WAL mark"],
                   lines=["replication slot: FAILED (gone)", "newest WAL mark: FAILED (old)"])
    body = _render(check.body, event)
    assert body.startswith("pitr check main failed: replication slot, newest WAL mark\n"
                           "replication slot: FAILED (gone)\nnewest WAL mark: FAILED (old)")
    quiet = ship_silence(block).actions[0]
    event = _event("pitrflow.wal.shipped", "pitrflow.instance.main")
    assert _render(quiet.subject, event) == "pitrflow: main: no WAL ship in 30 min"
    assert "ship_logs/main" in _render(quiet.body, event)


def test_failure_alert_covers_every_pitrflow_flow_and_nothing_else() -> None:
    trigger = _server_trigger(failed_run(None))
    for spec in FLOWS:
        assert trigger.covers(_flow_run_event(spec.flow, "Failed")), spec.flow
        assert trigger.covers(_flow_run_event(spec.flow, "Crashed")), spec.flow
    assert not trigger.covers(_flow_run_event("backup_full", "Completed"))
    assert not trigger.covers(_flow_run_event("someone_elses_flow", "Failed"))


def test_alerts_send_through_the_block_when_one_is_given() -> None:
    block = uuid4()
    actions = [a.actions for a in desired_automations(block)]
    assert all([x.type for x in acts] == ["send-notification"] for acts in actions)
    assert all(acts[0].block_document_id == block for acts in actions)
    assert [a.actions[0].type for a in desired_automations(None)] == ["do-nothing"] * 5
    assert ship_silence(None, within=timedelta(seconds=45)).name == (
        "pitrflow: no WAL ship in 45 s")
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

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(UsageError, match="PREFECT_API_URL is not set"):
            setup(str(config_file))
        with pytest.raises(UsageError, match="PREFECT_API_URL is not set"):
            deploy_all(str(config_file))


def test_a_follow_instance_gets_a_long_running_follow_wal_deployment(tmp_path: Path) -> None:
    path = tmp_path / "pitrflow.toml"
    path.write_text('[repository]\npath = "r"\n[instances.a]\nengine = "postgresql"\nhost = "h"\n'
                    'follow = true\n[instances.b]\nengine = "postgresql"\nhost = "h"\n')
    document = generate.build_prefect_yaml(generate.load_config(path))
    follow = [d for d in document["deployments"] if d["entrypoint"].endswith(":follow_wal")]
    assert [d["name"] for d in follow] == ["a"]
    assert follow[0]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert follow[0]["schedules"][0]["rrule"].startswith("FREQ=HOURLY;BYMINUTE=")
    assert len(follow[0]["schedules"][0]["rrule"].split("BYMINUTE=")[1].split(";")[0]
               .split(",")) == 12  # every five minutes, shifted by the instance's offset
    # The flow module the entry names exists and is a Prefect flow.
    from flows.follow_wal import follow_wal

    assert follow_wal.name == "follow_wal"
