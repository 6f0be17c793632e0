"""Two hundred instances on the session's Prefect server: register, register again, lose one.

The stack's own instances (main, down) plus 198 more that point at a closed
port: registration never connects to a database, so they cost nothing but
their deployments.  They go to a pool of their own that no worker polls (each
poll of a queue marks every deployment in it ready: a write per deployment), and
the stack's worker is paused meanwhile: it polls every second, and each poll takes
the server's SQLite write lock, which made the same deploy two to four times
slower than the registration itself.  The time of the first `pitr deploy` is printed (run with
-s to see it) rather than asserted: it depends on the machine, and what must
hold is that everything is there, once, and that a second run sends nothing.
This module sorts after the other end-to-end ones and puts the stack's config
back when it is done, without deploying it again: nothing runs on the server
after it, and removing 1,576 deployments would cost SQLite about 100 s for what
the lost instance below already proves (a config owns its pool).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from deployments.register import read_tagged
from deployments.setup import read_limits
from deployments.specs import FLOWS
from tests.deploy.conftest import Stack
from tests.deploy.test_prefect_server_e2e import _registered

pytestmark = pytest.mark.deploy

EXTRA = [f"db-{i:03d}" for i in range(2, 200)]
FLEET_POOL = "pitrflow-fleet"
GONE = "db-107"


def _with_instances(config: Path, original: str, names: list[str]) -> None:
    blocks = [f'\n[instances.{name}]\nengine = "postgresql"\nhost = "127.0.0.1"\nport = 9\n'
              for name in names]
    config.write_text(original + "".join(blocks))


@pytest.fixture
def fleet(stack: Stack) -> Iterator[Path]:
    config = stack.env.config_path
    original = config.read_text()
    _with_instances(config, original, EXTRA)
    try:
        with stack.worker_paused():
            yield config
    finally:
        config.write_text(original)


def test_two_hundred_instances_register_once_change_nothing_then_lose_one(
        stack: Stack, fleet: Path) -> None:
    started = time.monotonic()
    said = stack.deploy(pool=FLEET_POOL)
    elapsed = time.monotonic() - started
    print(f"\npitr deploy of 200 instances (1,600 deployments): {elapsed:.1f} s")
    # main and down move to the fleet's pool; the 198 are new.
    assert "deployments: 1584 created, 16 updated, 0 unchanged, 0 removed" in said, said
    with get_client(sync_client=True) as client:
        deployments = read_tagged(client)
        limits = [c.name for c in read_limits(client)
                  if c.name.startswith(("pitrflow-backup-", "pitrflow-ship-"))]
        fulls = [d for d in deployments if d.name in EXTRA
                 and d.entrypoint == "flows/backup_full.py:backup_full"]
    names = sorted(d.name for d in deployments)
    assert names == sorted([*EXTRA, "down", "main"] * len(FLOWS))
    assert len(limits) == 400
    # Spread: the 198 fulls start at (almost) 198 different seconds of the first hour.
    starts = {d.schedules[0].schedule.rrule.splitlines()[-1] for d in fulls}  # type: ignore[union-attr]
    assert len(fulls) == 198 and len(starts) >= 188

    assert {d.work_pool_name for d in deployments} == {FLEET_POOL}

    before = _registered()
    started = time.monotonic()
    said = stack.deploy(pool=FLEET_POOL)
    print(f"pitr deploy again, nothing to change: {time.monotonic() - started:.1f} s")
    assert "deployments: 0 created, 0 updated, 1600 unchanged, 0 removed" in said, said
    assert _registered() == before

    _with_instances(fleet, fleet.read_text().split("\n[instances.db-")[0],
                    [n for n in EXTRA if n != GONE])
    said = stack.deploy(pool=FLEET_POOL)
    assert "deployments: 0 created, 0 updated, 1592 unchanged, 8 removed" in said, said
    assert f"instances removed: {GONE} (2 concurrency limits removed)" in said, said
    with get_client(sync_client=True) as client:
        for spec in FLOWS:
            with pytest.raises(ObjectNotFound):
                client.read_deployment_by_name(f"{spec.flow}/{GONE}")
        for kind in ("backup", "ship"):
            with pytest.raises(ObjectNotFound):
                client.read_global_concurrency_limit_by_name(f"pitrflow-{kind}-{GONE}")
    after = _registered()
    kept = {k: v for k, v in before["deployments"].items() if not k.endswith(f"/{GONE}")}
    assert after["deployments"] == kept  # the others untouched: same ids, same `updated`
    assert after["automations"] == before["automations"]
