"""From `pitr deploy` to a running backup system, on a real Prefect server and worker.

The stack (tests/deploy/conftest.py) is one `prefect server start` and one
`process` worker for the session, with the deployments of instances `main`
(the test cluster) and `down` (a port nothing listens on) registered.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from deployments.alerts import ship_silence
from deployments.desired import MANAGED_TAG
from deployments.register import read_tagged
from deployments.setup import read_limits, setup
from flows._limits import destination_lock_name, limit_name
from tasks.events import instance_resource
from tests.conftest import free_port, restored_ids
from tests.deploy.conftest import NOTIFY, POOL, Stack
from tests.deploy.webhook import Receiver

pytestmark = pytest.mark.deploy

# The registered rules at the instance's offset (spread 60 min): main is 00:10:51.
EXPECTED_RULES = {
    "backup_full": "FREQ=DAILY;BYHOUR=0;BYMINUTE=10;BYSECOND=51",
    "backup_incremental": "FREQ=DAILY;BYHOUR=6,12,18;BYMINUTE=10;BYSECOND=51",
    "ship_logs": "FREQ=HOURLY;BYMINUTE=10,25,40,55;BYSECOND=51",
    "recovery_drill": "FREQ=DAILY;BYHOUR=2;BYMINUTE=40;BYSECOND=51",
    "restore_to_point": None,
}


def test_schedules_parameters_queues_and_limits_read_back_from_the_api(stack: Stack) -> None:
    with get_client(sync_client=True) as client:
        for flow, rule in EXPECTED_RULES.items():
            deployment = client.read_deployment_by_name(f"{flow}/main")
            # Prefect anchors a rule without one at DTSTART:20200101T000000, in its timezone.
            schedules = [(s.schedule.rrule.splitlines()[-1],  # type: ignore[union-attr]
                          s.schedule.timezone, s.active)  # type: ignore[union-attr]
                         for s in deployment.schedules]
            assert schedules == ([(rule, "UTC", True)] if rule else []), flow
            # Only the instance and the config path: no secret rides in a parameter.
            assert deployment.parameters == {"instance": "main", "config_path": stack.config}
            assert deployment.work_pool_name == POOL
            assert deployment.job_variables["env"] == {"PITRFLOW_CONCURRENCY": "strict"}
            assert MANAGED_TAG in deployment.tags
        ship = client.read_deployment_by_name("ship_logs/main")
        assert ship.global_concurrency_limit and ship.global_concurrency_limit.limit == 1
        assert ship.concurrency_options is not None
        assert ship.concurrency_options.collision_strategy == "CANCEL_NEW"
        assert client.read_deployment_by_name("backup_full/main").global_concurrency_limit is None
        restore = client.read_deployment_by_name("restore_to_point/main")
        assert restore.work_queue_name == "restores"
        queues = {q.name: q.priority for q in client.read_work_queues(work_pool_name=POOL)}
        assert queues["restores"] == 1 and queues["default"] > 1
        target = restore.parameter_openapi_schema["properties"]["target_time"]
        assert {"type": "string", "format": "date-time"} in target["anyOf"]
        # pgdata is a form field, optional because SQL Server restores need none.
        assert "pgdata" in restore.parameter_openapi_schema["properties"]
        assert restore.parameter_openapi_schema["required"] == ["instance"]
        assert client.read_work_pool(POOL).type == "process"


def test_backup_ship_and_ad_hoc_restore_to_a_target_time(stack: Stack) -> None:
    env = stack.env
    env.commit_row()
    env.commit_row()
    full = stack.run("backup_full/main")
    assert full.state and full.state.is_completed(), stack.explain(full)
    env.commit_row()
    last_id, target = env.commit_row()
    env.commit_row()  # after the target: must not be restored
    env.commit_row()
    ship = stack.run("ship_logs/main")
    assert ship.state and ship.state.is_completed(), stack.explain(ship)

    port, pgdata = free_port(), env.root / "restored"
    restore = stack.run("restore_to_point/main", pgdata=str(pgdata), target_time=target,
                        port=port)
    assert restore.state and restore.state.is_completed(), stack.explain(restore)
    assert restored_ids(port) == list(range(1, last_id + 1))
    with get_client(sync_client=True) as client:  # the data directory was held by its own lock
        lock = client.read_global_concurrency_limit_by_name(destination_lock_name(pgdata))
    assert (lock.limit, lock.active_slots) == (1, 0)

    # The worker's flow-run processes emitted one event each, about the instance.
    [backed_up] = pitrflow_events("pitrflow.backup.completed", "main", full.id)
    [shipped] = pitrflow_events("pitrflow.wal.shipped", "main", ship.id)
    assert backed_up.payload["size_bytes"] > 0 and backed_up.payload["kind"] == "full"
    assert shipped.payload["stored"] >= 1 and shipped.payload["lag_seconds"] is not None
    assert backed_up.resource.get("pitrflow.engine") == "postgresql"
    related = {(r.role, r.name) for r in shipped.related}
    assert {("flow", "ship_logs"), ("deployment", "main")} <= related
    # The fleet's own automation counts exactly these.
    ship_alert = _server_trigger("pitrflow: no WAL ship in 30 min")
    backup_alert = _server_trigger("pitrflow: no backup in 7 h")
    assert ship_alert.covers(_server_event(shipped)) and not ship_alert.covers(
        _server_event(backed_up))
    assert backup_alert.covers(_server_event(backed_up))


def _backup_window(flow_run_id: UUID) -> tuple[Any, Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
    backups = [r for r in runs if r.name.startswith(("take-full-backup", "take-incremental"))]
    assert len(backups) == 1, [r.name for r in runs]
    assert backups[0].start_time and backups[0].end_time
    return backups[0].start_time, backups[0].end_time


def _wait_final(flow_run_ids: list[UUID], timeout: float = 150) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in flow_run_ids]
            if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(1)


def test_two_backups_of_one_instance_never_overlap(stack: Stack) -> None:
    # Triggered together, as a late full and an on-time incremental would be.
    first = stack.run("backup_full/main", timeout=0)
    second = stack.run("backup_incremental/main", timeout=0)
    runs = _wait_final([first.id, second.id])
    for flow_run in runs:
        assert flow_run.state and flow_run.state.is_completed(), stack.explain(flow_run)
    (a_start, a_end), (b_start, b_end) = sorted(_backup_window(r.id) for r in runs)
    assert a_end <= b_start, f"backups overlapped: {a_start}..{a_end} and {b_start}..{b_end}"
    with get_client(sync_client=True) as client:
        slot = client.read_global_concurrency_limit_by_name(limit_name("backup", "main"))
    assert (slot.limit, slot.active_slots) == (1, 0)


def test_strict_slot_refuses_to_run_without_its_limit(stack: Stack) -> None:
    name = limit_name("ship", "down")
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(name)
    try:
        ship = stack.run("ship_logs/down")
        assert ship.state and ship.state.is_failed(), stack.explain(ship)
        assert name in (ship.state.message or ""), stack.explain(ship)
    finally:
        setup(stack.config, POOL, NOTIFY)


def pitrflow_events(name: str, instance: str, flow_run_id: UUID, timeout: float = 60
                    ) -> list[Any]:
    """The NAME events about INSTANCE that flow run FLOW_RUN_ID emitted, once stored."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(
                event=EventNameFilter(name=[name]),
                resource=EventResourceFilter(id=[f"pitrflow.instance.{instance}"])), limit=50)
        found = [e for e in page.events
                 if f"prefect.flow-run.{flow_run_id}" in {r.id for r in e.related}]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def _server_trigger(name: str) -> Any:
    from prefect.server.events.schemas.automations import EventTrigger

    with get_client(sync_client=True) as client:
        [automation] = [a for a in client.read_automations() if a.name == name]
    return EventTrigger.model_validate(automation.trigger.model_dump(mode="json"))


def _server_event(event: Any) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent.model_validate(event.model_dump(mode="json"))


def _alerts_about(receiver: Receiver, instance: str) -> list[dict[str, Any]]:
    return [m for m in list(receiver.received)
            if str(m.get("subject", "")).startswith(f"pitrflow: {instance}: ")]


def _wait_for_alert(receiver: Receiver, needle: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(receiver.received):
            if needle in str(message.get("body", "")) + str(message.get("subject", "")):
                return message
        time.sleep(0.5)
    raise AssertionError(f"no alert mentioning {needle!r}; received: {receiver.received}")


def test_failed_backup_of_a_stopped_server_reaches_the_alert_webhook(stack: Stack) -> None:
    with get_client(sync_client=True) as client:
        automations = {a.name: a for a in client.read_automations()}
    expected = {"pitrflow: a run failed", "pitrflow: a recovery drill failed",
                "pitrflow: a health check failed", "pitrflow: no WAL ship in 30 min",
                "pitrflow: no backup in 7 h"}
    # The same five for any number of instances; no automation per instance is left.
    assert {n for n, a in automations.items() if MANAGED_TAG in a.tags} == expected
    for name in expected:
        assert [a.type for a in automations[name].actions] == ["send-notification"], name
        assert MANAGED_TAG in automations[name].tags

    failed = stack.run("backup_full/down", timeout=180)  # its server is not running
    assert failed.state and failed.state.is_failed(), stack.explain(failed)
    alert = _wait_for_alert(stack.receiver, failed.name)
    assert alert["subject"] == "pitrflow: backup_full Failed"
    assert "instance down" in alert["body"] and "cannot connect" in alert["body"]
    assert not [m for m in stack.receiver.received if "drill" in str(m.get("subject"))]


def test_fleet_silence_alert_fires_for_the_one_stale_instance_among_many(stack: Stack) -> None:
    """The fleet's ship alert with a 15-second window: eleven instances keep shipping, one
    stops; the webhook hears about that one and no other."""
    names = [f"fleet-{i:02d}" for i in range(12)]
    stale, live = names[7], names[:7] + names[8:]
    with get_client(sync_client=True) as client:
        block = client.read_block_document_by_name("pitrflow-e2e-alerts", "custom-webhook")
        quick = ship_silence(block.id, within=timedelta(seconds=15))
        quick.name, quick.tags = "e2e: quick ship silence", []  # setup leaves it alone
        automation_id = client.create_automation(quick)
    try:
        time.sleep(2)  # the server loads a new automation a moment after it is created
        for name in names:
            emit_event("pitrflow.instance.deployed", instance_resource(name, "postgresql"))
            emit_event("pitrflow.wal.shipped", instance_resource(name, "postgresql"),
                       payload={"stored": 1})
        deadline = time.monotonic() + 150
        while not _alerts_about(stack.receiver, stale) and time.monotonic() < deadline:
            for name in live:
                emit_event("pitrflow.wal.shipped", instance_resource(name, "postgresql"),
                           payload={"stored": 1})
            time.sleep(2)
        [alert] = _alerts_about(stack.receiver, stale)
        assert alert["subject"] == f"pitrflow: {stale}: no WAL ship in 15 s"
        assert f"No WAL ship of instance {stale} in the 15 s since" in alert["body"]
        assert f"ship_logs/{stale}" in alert["body"]
        assert not [m for name in live for m in _alerts_about(stack.receiver, name)]
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)
        for name in names:  # close the fleet automations' windows of these names too
            emit_event("pitrflow.instance.removed", instance_resource(name))


def _registered() -> dict[str, Any]:
    """Everything pitr deploy manages, with the ids and timestamps an update would change."""
    with get_client(sync_client=True) as client:
        automations = {a.name: (a.id, a.model_dump(mode="json")) for a in client.read_automations()}
        deployments = {f"{d.flow_id}/{d.name}": (d.id, d.updated, [s.id for s in d.schedules])
                       for d in read_tagged(client)}
        limits = {c.name: (c.id, c.limit) for c in read_limits(client)
                  if c.name.startswith("pitrflow-")}
        queues = {q.name: (q.id, q.priority) for q in client.read_work_queues(
            work_pool_name=POOL)}
    return {"automations": automations, "deployments": deployments, "limits": limits,
            "queues": queues}


def test_deploy_again_changes_nothing(stack: Stack) -> None:
    before = _registered()
    said = stack.deploy()
    assert "deployments: 0 created, 0 updated, 16 unchanged, 0 removed" in said
    # An updated automation would restart every instance's silence window.
    assert len([line for line in said if line.endswith("': unchanged")]) == 5, said
    assert _registered() == before
    # Again without --notify: nothing is recreated, and the alerts still page someone.
    said = stack.deploy(notify=None)
    assert len([line for line in said if line.endswith("': unchanged")]) == 5, said
    assert _registered() == before
    with get_client(sync_client=True) as client:
        managed = [a for a in client.read_automations() if MANAGED_TAG in a.tags]
    assert managed and all([x.type for x in a.actions] == ["send-notification"] for a in managed)
