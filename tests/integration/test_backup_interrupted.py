"""A backup killed mid-way leaves nothing that looks valid, and the next one succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.render import info_dict
from tests.conftest import Env, write_config


def test_killed_backup_leaves_nothing_valid(env: Env) -> None:
    # Enough data that a throttled backup runs for a while.
    env.sql("CREATE TABLE bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g")
    slow = write_config(env.root / "slow", env.cluster, env.instance.slot_name,
                        'max_rate = "1M"')
    slow_text = slow.source.read_text().replace(str(env.root / "slow" / "repo"),
                                                str(env.root / "repo"))
    slow.source.write_text(slow_text)
    script = ("import sys; from pitrflow.config import load_config; "
              "from pitrflow.storage import open_repository; "
              "from pitrflow.engines.postgres.backup.basebackup import take_backup; "
              "c = load_config(sys.argv[1]); "
              "take_backup(c.instance('main'), open_repository(c.repository))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(slow.source)],
                            start_new_session=True)
    repo_dir = env.root / "repo"
    deadline = time.monotonic() + 30
    # Wait until the backup is really writing.
    while time.monotonic() < deadline:
        if any(p.is_file() for p in repo_dir.rglob("*")):
            time.sleep(1.0)
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the throttled backup finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    env.sql("DROP TABLE bulk")

    catalog = read_catalog(env.repo, "main")
    assert catalog.backups == []
    assert info_dict(catalog)["backups"] == []
    assert info_dict(catalog)["recoverable"] == {"from": None, "to": None, "latest": None}

    outcome = take_backup(env.instance, env.repo)
    catalog = read_catalog(env.repo, "main")
    assert [b.id for b in catalog.backups] == [outcome.manifest.id]
