"""`pitr backup`, `ship`, `restore` and `info` (Prefect flow runs) on an S3 repository.

The filesystem journey (test_cli.py) shortened to the commands that touch the
repository: only the configuration names a bucket.  It proves the flows, the
tasks and the restore_command (`pitr wal-fetch`, run by PostgreSQL) work on S3
unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import free_port, restored_ids
from tests.integration.test_cli import pitr
from tests.s3server import S3Server, bucket_of


def test_backup_ship_restore_and_info_commands_on_s3(pg18, make_s3_env, s3: S3Server,
                                                      tmp_path: Path) -> None:
    env = make_s3_env(pg18)
    cfg = str(env.config_path)
    home = tmp_path / "prefect-home"
    result = pitr("--config", cfg, "backup", "full", "main", home=home)
    assert result.returncode == 0, result.stderr
    last_id, after = env.commit_row()
    env.commit_row()
    result = pitr("--config", cfg, "ship", "main", home=home)
    assert result.returncode == 0, result.stderr

    info = json.loads(pitr("--config", cfg, "info", "main", "--json").stdout)
    assert [b["type"] for b in info["backups"]] == ["full"] and info["wal"]["segments"] > 0

    port = free_port()
    result = pitr("--config", cfg, "restore", "main", "--to", after.isoformat(), "--pgdata",
                  str(env.root / "restored"), "--port", str(port), home=home)
    assert result.returncode == 0, result.stderr
    assert restored_ids(port) == list(range(1, last_id + 1))
    assert not (env.root / "repo").exists()
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket_of(env))["Contents"]]
    assert any(k.endswith("/manifest.json") for k in keys)
