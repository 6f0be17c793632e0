"""From `pitr deploy` to a running backup system, on a real Prefect server and worker.

One module-scoped stack: `prefect server start` on a free port (its own
PREFECT_HOME and SQLite file), the deployments registered by
`deployments.deploy.deploy_all` (generator + setup + `prefect deploy --all`),
and a `process` worker started from the project root without PITR_CONFIG, so
everything the runs know comes from the deployments.  Runs are triggered
through the API as the UI does.  The server's scheduler is off, so the
registered schedules can be read back without a 00:00 backup or a 02:30 drill
starting in the middle of the test.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.alerts import MANAGED_TAG, ship_silence
from deployments.deploy import deploy_all
from deployments.generate import PROJECT_ROOT
from deployments.setup import setup
from flows._limits import destination_lock_name, limit_name
from pitrflow.devtools.localpg import LocalCluster
from tests.conftest import Env, _stop_restored, drop_slot, free_port, restored_ids, write_config
from tests.deploy import stack as proc
from tests.deploy.webhook import Receiver

pytestmark = pytest.mark.deploy

POOL = "pitrflow"
NOTIFY = "custom-webhook/pitrflow-e2e-alerts"
EXPECTED_CRONS = {
    "backup_full": "0 0 * * *",
    "backup_incremental": "0 6,12,18 * * *",
    "ship_logs": "*/15 * * * *",
    "recovery_drill": "30 2 * * *",
    "restore_to_point": None,
}


@dataclass
class Stack:
    env: Env
    api_url: str
    receiver: Receiver
    prefect_file: Path
    worker_log: Path

    @property
    def config(self) -> str:
        return str(self.env.config_path)

    def run(self, name: str, timeout: float = 150, **parameters: Any) -> FlowRun:
        """Trigger deployment NAME through the API and wait for its final state."""
        return run_deployment(name, parameters=parameters or None, timeout=timeout,
                              poll_interval=1)  # type: ignore[return-value]

    def explain(self, flow_run: FlowRun) -> str:
        state = flow_run.state
        return (f"{flow_run.name}: {state.name if state else '?'} "
                f"{state.message if state else ''}\nworker log:\n"
                + self.worker_log.read_text()[-4000:])


def _env_for(root: Path, cluster: LocalCluster) -> Env:
    slot = "pitrflow_e2e"
    extra = f"""
[instances.down]
engine = "postgresql"
host = "127.0.0.1"
port = {free_port()}
user = "postgres"
bin_dir = "{cluster.bin_dir}"
"""
    config = write_config(root, cluster, slot, extra)
    with cluster.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS items")
        conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, note text, "
                     "at timestamptz DEFAULT clock_timestamp())")
    return Env(cluster, config, root)


@pytest.fixture(scope="module")
def stack(pg18: LocalCluster, work_root: Path) -> Iterator[Stack]:
    root = work_root / "e2e"
    home = root / "prefect-home"
    home.mkdir(parents=True)
    env = _env_for(root, pg18)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = proc.prefect_env(
        home,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    worker_env = proc.prefect_env(home, PREFECT_API_URL=api_url,
                                  PREFECT_WORKER_QUERY_SECONDS="1")
    server_log, worker_log = root / "server.log", root / "worker.log"
    try:
        with Receiver() as receiver, \
                proc.child(proc.server_argv(port), server_env, root, server_log) as server, \
                temporary_settings(updates={PREFECT_API_URL: api_url}):
            proc.wait_healthy(api_url, server, server_log)
            CustomWebhookNotificationBlock(
                name="pitrflow-e2e", url=receiver.url,
                json_data={"subject": "{{subject}}", "body": "{{body}}"},
            ).save(NOTIFY.split("/")[1], overwrite=True)
            prefect_file = root / "prefect.yaml"
            deploy_all(str(env.config_path), POOL, "UTC", notify=NOTIFY,
                       prefect_file=prefect_file)
            with proc.child(proc.worker_argv(POOL), worker_env, PROJECT_ROOT, worker_log):
                yield Stack(env, api_url, receiver, prefect_file, worker_log)
    finally:
        _stop_restored(pg18, root)
        drop_slot(pg18, "pitrflow_e2e")
        shutil.rmtree(root, ignore_errors=True)


def test_schedules_parameters_and_pool_read_back_from_the_api(stack: Stack) -> None:
    with get_client(sync_client=True) as client:
        for flow, cron in EXPECTED_CRONS.items():
            deployment = client.read_deployment_by_name(f"{flow}/main")
            schedules = [(s.schedule.cron, s.schedule.timezone, s.active)  # type: ignore[union-attr]
                         for s in deployment.schedules]
            assert schedules == ([(cron, "UTC", True)] if cron else []), flow
            # Only the instance and the config path: no secret rides in a parameter.
            assert deployment.parameters == {"instance": "main", "config_path": stack.config}
            assert deployment.work_pool_name == POOL
            assert deployment.job_variables["env"] == {"PITRFLOW_CONCURRENCY": "strict"}
        restore = client.read_deployment_by_name("restore_to_point/main")
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
                "pitrflow: main: no WAL ship in 30 min", "pitrflow: main: no backup in 7 h",
                "pitrflow: down: no WAL ship in 30 min", "pitrflow: down: no backup in 7 h"}
    assert expected <= set(automations)
    for name in expected:
        assert [a.type for a in automations[name].actions] == ["send-notification"], name
        assert MANAGED_TAG in automations[name].tags

    failed = stack.run("backup_full/down", timeout=180)  # its server is not running
    assert failed.state and failed.state.is_failed(), stack.explain(failed)
    alert = _wait_for_alert(stack.receiver, failed.name)
    assert alert["subject"] == "pitrflow: backup_full Failed"
    assert "instance down" in alert["body"] and "cannot connect" in alert["body"]
    assert not [m for m in stack.receiver.received if "drill" in str(m.get("subject"))]


def _completed_event(flow: str, deployment: str) -> Any:
    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.Completed"]),
            resource=EventResourceFilter(id_prefix=["prefect.flow-run."])), limit=50)
    for event in page.events:
        related = {(r.role, r.name) for r in event.related}
        if ("flow", flow) in related and ("deployment", deployment) in related:
            return event
    raise AssertionError(f"no Completed event of {flow}/{deployment}")


def test_silence_alerts_match_only_their_instance_and_fire_when_nothing_arrives(
        stack: Stack) -> None:
    from prefect.server.events.schemas.automations import EventTrigger as ServerTrigger
    from prefect.server.events.schemas.events import ReceivedEvent as ServerEvent

    with get_client(sync_client=True) as client:
        by_name = {a.name: a for a in client.read_automations()}
    ship_main = ServerTrigger.model_validate(
        by_name["pitrflow: main: no WAL ship in 30 min"].trigger.model_dump(mode="json"))
    backup_main = ServerTrigger.model_validate(
        by_name["pitrflow: main: no backup in 7 h"].trigger.model_dump(mode="json"))
    shipped = ServerEvent.model_validate(
        _completed_event("ship_logs", "main").model_dump(mode="json"))
    backed_up = ServerEvent.model_validate(
        _completed_event("backup_full", "main").model_dump(mode="json"))
    assert ship_main.covers(shipped) and not ship_main.covers(backed_up)
    assert backup_main.covers(backed_up) and not backup_main.covers(shipped)

    # The same alert with a 10-second window, for an instance that never ships.
    with get_client(sync_client=True) as client:
        block = client.read_block_document_by_name("pitrflow-e2e-alerts", "custom-webhook")
        quick = ship_silence("down", block.id, within=timedelta(seconds=10))
        quick.tags = []  # not managed: setup must leave it alone; this test removes it
        automation_id = client.create_automation(quick)
    try:
        alert = _wait_for_alert(stack.receiver, "No WAL ship of instance down", timeout=60)
        assert alert["subject"] == "pitrflow: down: no WAL ship in 10 s"
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)


def test_deploy_again_changes_nothing(stack: Stack) -> None:
    def snapshot() -> tuple[dict[str, UUID], dict[str, UUID], dict[str, int]]:
        with get_client(sync_client=True) as client:
            automations = {a.name: a.id for a in client.read_automations()}
            deployments = {f"{d.flow_id}/{d.name}": d.id for d in client.read_deployments()}
            limits = {c.name: c.limit for c in client.read_global_concurrency_limits(limit=200)}
        return automations, deployments, limits

    before = snapshot()
    deploy_all(stack.config, POOL, "UTC", notify=NOTIFY, prefect_file=stack.prefect_file)
    assert snapshot() == before
    # Again without --notify: nothing is recreated, and the alerts still page someone.
    deploy_all(stack.config, POOL, "UTC", prefect_file=stack.prefect_file)
    assert snapshot() == before
    with get_client(sync_client=True) as client:
        managed = [a for a in client.read_automations() if MANAGED_TAG in a.tags]
    assert managed and all([x.type for x in a.actions] == ["send-notification"] for a in managed)

