"""infra/host/run-server-and-worker.sh brings up a server and a worker, and takes them down.

The script is what a new user runs first, so it is run for real: the API
answers, a worker registers in the pool, and a TERM leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.deploy.stack import alive, descendants, prefect_env, stop_tree

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "host" / "run-server-and-worker.sh"

pytestmark = pytest.mark.deploy


def _workers(api_url: str, pool: str) -> list[str]:
    try:
        response = httpx.post(f"{api_url}/work_pools/{pool}/workers/filter", json={},
                              timeout=5)
    except httpx.HTTPError:
        return []  # the server is still starting
    return [w["name"] for w in response.json()] if response.status_code == 200 else []


def test_script_starts_server_and_worker_and_stops_both(tmp_path: Path) -> None:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(tmp_path / "home", PITRFLOW_VENV=sys.prefix, PITRFLOW_HOME=str(ROOT),
                      PITRFLOW_POOL="pitrflow-script", PREFECT_SERVER_API_PORT=str(port),
                      PREFECT_API_DATABASE_CONNECTION_URL=(
                          f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"),
                      PREFECT_UI_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="1")
    log = tmp_path / "script.log"
    with open(log, "wb") as out:
        script = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _workers(api_url, "pitrflow-script"):
            assert script.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no worker registered:\n" + log.read_text()
            time.sleep(0.5)
        children = descendants(script.pid)
        assert children
        os.kill(script.pid, signal.SIGTERM)
        assert script.wait(timeout=120) is not None
        deadline = time.monotonic() + 20
        while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if alive(pid)], log.read_text()[-3000:]
    finally:
        stop_tree(script)
