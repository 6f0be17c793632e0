"""Bytes changed in the bucket behind pitrflow's back are caught on restore, naming the object.

The damage keeps each object's size, so the catalog (which checks sizes)
still lists the backup: only the SHA-256 check while reading can catch it.
PostgreSQL's restore_command (`pitr wal-fetch`) reads segments straight from
S3 and refuses a damaged one with exit status 255, so recovery stops.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import zstandard

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import ChecksumMismatchError
from pitrflow.storage.layout import backup_object
from tests.conftest import Env, restored_ids
from tests.integration import test_pitr_postgres as pitr
from tests.s3server import S3Server, bucket_of

PREFIX = "pitr/"


def damage(s3: S3Server, bucket: str, key: str) -> bytes:
    """Flip one byte in the middle of an object, in place; return the original bytes."""
    client = s3.client()
    original = client.get_object(Bucket=bucket, Key=PREFIX + key)["Body"].read()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=PREFIX + key, Body=bytes(changed))
    return original


def restore_back(s3: S3Server, bucket: str, key: str, original: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=PREFIX + key, Body=original)


def wal_fetch(env: Env, name: str, dest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config",
                           str(env.config_path), "wal-fetch", "main", name, dest],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ))


def test_damaged_objects_are_detected_on_restore_naming_them(
        pg18, make_s3_env, s3: S3Server) -> None:
    env: Env = make_s3_env(pg18, via_proxy=False)
    env.commit_row()
    backup = take_backup(env.instance, env.repo).manifest
    last_id, after = env.commit_row()
    ship_wal(env.instance, env.repo)
    bucket = bucket_of(env)
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(after))

    # wal-fetch serves a healthy segment straight from S3 (no spool).
    segment = plan.wal[0]
    fetched = env.root / "fetched"
    result = wal_fetch(env, segment.segment, str(fetched))
    assert result.returncode == 0, result.stderr
    stored = s3.client().get_object(Bucket=bucket, Key=PREFIX + segment.key)["Body"].read()
    assert fetched.read_bytes() == zstandard.ZstdDecompressor().decompress(stored)

    # A damaged WAL segment: the restore refuses, naming the object, and leaves nothing.
    original = damage(s3, bucket, segment.key)
    with pytest.raises(ChecksumMismatchError, match=re.escape(segment.key)):
        pitr.restore(env, after, "bad-wal")
    assert not (env.root / "bad-wal").exists()
    result = wal_fetch(env, segment.segment, str(env.root / "fetched-bad"))
    assert result.returncode == 255
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and segment.key in lines[0] and "Traceback" not in result.stderr
    assert not (env.root / "fetched-bad").exists()
    restore_back(s3, bucket, segment.key, original)

    # A damaged base backup.
    biggest = max((f for f in backup.files if f.name.endswith(".tar.zst")), key=lambda f: f.size)
    base_key = backup_object("main", backup.id, biggest.name)
    original = damage(s3, bucket, base_key)
    assert read_catalog(env.repo, "main").backups, "same size: the catalog cannot tell"
    with pytest.raises(ChecksumMismatchError, match=re.escape(base_key)):
        pitr.restore(env, after, "bad-base")
    assert not (env.root / "bad-base").exists()
    restore_back(s3, bucket, base_key, original)

    # Repaired, the same restore lands on the right rows.
    outcome = pitr.restore(env, after, "repaired")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))
