"""Point-in-time recovery on encrypted repositories, filesystem and S3, as users run it.

The exactness test of the plain repository runs unchanged on top of the encrypting
wrapper: only [repository.encryption] is added to the config.  Then the bytes really
stored are checked (every object sealed, nothing readable), the restore_command
(`pitr wal-fetch`, run by PostgreSQL) decrypts a segment straight from the
repository, and `pitr info` says which backups are encrypted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.restore.executor import RestoreRequest, _restore_command
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walship import ship_wal
from tests.conftest import Env
from tests.encryption import (
    PASSPHRASE,
    assert_all_encrypted,
    encrypt_env,
    stored_fs,
    stored_s3,
    with_passphrase,
)
from tests.integration import test_pitr_postgres as pitr
from tests.s3server import S3Server, bucket_of

PITR = [sys.executable, "-m", "pitrflow.cli"]


def run_pitr(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PITR, "--config", str(env.config_path), *args],
                          capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ))


def restore_command_fetches_from_the_repository(env: Env, tmp_path: Path) -> None:
    """PostgreSQL's restore_command line, run as PostgreSQL runs it, with an empty spool:
    the segment comes out of the (encrypted) repository, decrypted and whole."""
    plan = plan_restore(read_catalog(env.repo, "main"), RestoreTarget(None))
    spool = tmp_path / "empty-spool"
    spool.mkdir()
    request = RestoreRequest(env.instance, tmp_path / "pgdata", config_file=env.config_path)
    command, kind = _restore_command(request, plan, spool, run_as=None)
    assert kind == "pitr wal-fetch"
    dest = tmp_path / "RECOVERYXLOG"
    line = command.replace("%f", plan.wal[-1].segment).replace("%p", str(dest))
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, check=False,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert dest.stat().st_size == plan.segment_size
    assert PASSPHRASE not in done.stdout + done.stderr


def info_says_encrypted(env: Env) -> None:
    result = run_pitr(env, "info", "main", "--json")
    assert result.returncode == 0, result.stderr
    backups = json.loads(result.stdout)["backups"]
    assert len(backups) == 2
    assert all(b["encryption"]["cipher"] == "aes-256-gcm" for b in backups)
    # Each full backup starts a new data key.
    assert backups[0]["encryption"]["data_key"] != backups[1]["encryption"]["data_key"]
    text = run_pitr(env, "info", "main").stdout
    assert text.count("encrypted (aes-256-gcm, key ") == 2, text
    assert PASSPHRASE not in result.stdout + result.stderr + text


def test_pitr_is_exact_on_an_encrypted_filesystem_repository(
        pg18, make_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = with_passphrase(make_env(pg18), monkeypatch)

    pitr.test_restores_land_exactly_on_committed_rows(env)

    assert_all_encrypted(stored_fs(env))
    restore_command_fetches_from_the_repository(env, tmp_path)
    info_says_encrypted(env)
    logs = "".join(p.read_text(errors="replace") for p in env.root.glob("*/log/*.log"))
    assert logs and PASSPHRASE not in logs


def test_pitr_is_exact_on_an_encrypted_s3_repository_with_a_kms_key(
        pg18, make_s3_env, s3: S3Server, tmp_path: Path) -> None:
    env: Env = make_s3_env(pg18)
    key_id = s3.kms_key()
    encrypt_env(env, f'kms_key_id = "{key_id}"\nkms_region = "us-east-1"\n'
                     f'kms_endpoint_url = "{s3.url}"')

    pitr.test_restores_land_exactly_on_committed_rows(env)

    assert not (env.root / "repo").exists(), "an S3 repository wrote to the local disk"
    stored = stored_s3(s3.client(), bucket_of(env))
    assert_all_encrypted(stored)
    assert sum(k.endswith("/manifest.json") for k in stored) == 2
    master = [o["Key"] for o in s3.client().list_objects_v2(
        Bucket=bucket_of(env), Prefix="pitr/_keys/master-")["Contents"]]
    body = s3.client().get_object(Bucket=bucket_of(env), Key=master[0])["Body"].read()
    assert json.loads(body)["params"]["kms_key_id"] == key_id
    restore_command_fetches_from_the_repository(env, tmp_path)
    info_says_encrypted(env)


def test_a_backup_restores_through_a_chain_on_an_encrypted_repository(
        pg18, make_env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full + incremental (pg_combinebackup reads the unpacked, decrypted links)."""
    from pitrflow.engines.postgres.backup.incremental import take_incremental

    env = with_passphrase(make_env(pg18), monkeypatch)
    env.commit_row()
    take_backup(env.instance, env.repo)
    env.sql("INSERT INTO items(note) SELECT 'bulk' FROM generate_series(1, 2000)")
    outcome = take_incremental(env.instance, env.repo, allow_full_fallback=False)
    assert outcome.manifest.type == "incremental"
    last_id, after = env.commit_row()
    ship_wal(env.instance, env.repo)
    restored = pitr.restore(env, after, "chain")
    assert len(restored.plan.chain) == 2
    from tests.conftest import restored_ids

    assert restored_ids(restored.port) == list(range(1, last_id + 1))
    assert_all_encrypted(stored_fs(env))


def test_verify_expire_and_cleanup_work_unchanged_on_an_encrypted_repository(
        pg18, make_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from pitrflow.storage.cleanup import execute_cleanup, plan_cleanup
    from tests.integration import test_retention_verify_check as shared

    env = with_passphrase(make_env(pg18), monkeypatch)
    shared.test_verify_names_every_bad_object(env)

    env = with_passphrase(make_env(pg18), monkeypatch)
    shared.test_interrupted_expire_is_finished_by_the_next(env)
    kept = read_catalog(env.repo, "main").backups
    env.repo.put_bytes("main/backups/20261101T000000Z-F/base.tar.zst", b"half a backup")
    plan = plan_cleanup(env.repo, "main", now=datetime.now(UTC) + timedelta(days=2))
    assert [r.key for r in plan.removals] == ["main/backups/20261101T000000Z-F/base.tar.zst"]
    assert execute_cleanup(env.repo, plan).failed == []
    assert read_catalog(env.repo, "main").backups == kept
    assert_all_encrypted(stored_fs(env))
