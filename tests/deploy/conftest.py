"""One real Prefect server and process worker for every end-to-end test in this folder.

`prefect server start` on a free port (its own PREFECT_HOME and SQLite file),
everything registered by `deployments.deploy.deploy_all` (setup, the
deployments through the API, the instance events), and a `process` worker
started from the project root without PITR_CONFIG, so everything the runs
know comes from the deployments.  Runs are triggered through the API as the UI
does.  The server's scheduler is off, so the registered schedules can be read
back without a 00:00 backup or a 02:30 drill starting in the middle of a test.
Starting the pair costs about half a minute on two busy cores, so it is
started once for the folder; a test that changes what is registered puts it back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.deploy import deploy_all
from deployments.desired import PROJECT_ROOT
from pitrflow.devtools.localpg import LocalCluster
from tests.conftest import Env, _stop_restored, drop_slot, free_port, write_config
from tests.deploy import stack as proc
from tests.deploy.webhook import Receiver

POOL = "pitrflow"
NOTIFY = "custom-webhook/pitrflow-e2e-alerts"


@dataclass
class Stack:
    env: Env
    api_url: str
    receiver: Receiver
    worker_log: Path
    worker: subprocess.Popen[bytes] | None = None

    @contextlib.contextmanager
    def worker_paused(self) -> Iterator[None]:
        """Stop the worker's processes (SIGSTOP) while the body runs, then let them go on.

        The test worker polls every second, and each poll takes the server's SQLite
        write lock: around thousands of deployment writes it doubles their time.
        """
        pids = [self.worker.pid, *proc.descendants(self.worker.pid)] if self.worker else []
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    @property
    def config(self) -> str:
        return str(self.env.config_path)

    def deploy(self, config: str | None = None, pool: str = POOL, **options: Any) -> list[str]:
        """`pitr deploy` of CONFIG (default: the stack's own), by default to the stack's pool."""
        return deploy_all(config or self.config, pool, "UTC", **{"notify": NOTIFY, **options})

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


# Package scope: up for every test of tests/deploy, down before the rest of the suite.
@pytest.fixture(scope="package")
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
            built = Stack(env, api_url, receiver, worker_log)
            built.deploy()
            with proc.child(proc.worker_argv(POOL), worker_env, PROJECT_ROOT,
                            worker_log) as built.worker:
                yield built
    finally:
        _stop_restored(pg18, root)
        drop_slot(pg18, "pitrflow_e2e")
        shutil.rmtree(root, ignore_errors=True)
