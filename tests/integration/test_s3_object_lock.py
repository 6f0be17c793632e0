"""S3 Object Lock (moto's server over HTTP, which implements it): locked writes, expire that
waits for locks to lapse, deletes refused inside the lock, and what pitr check says.

S3 counts retention in days.  To see a lock lapse within a test, an administrator's
move is used, as on AWS: a GOVERNANCE retention shortened with
BypassGovernanceRetention (the s3:BypassGovernanceRetention permission pitrflow's
worker never has).  pitrflow itself never bypasses a lock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pitrflow.config import parse_config
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.backup.incremental import take_incremental
from pitrflow.engines.postgres.catalog.ops import expire
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.health import run_checks
from pitrflow.engines.postgres.render import expire_result_text
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import ObjectLockedError, RepositoryError
from pitrflow.storage.layout import manifest_key
from tests.conftest import Env
from tests.encryption import with_passphrase
from tests.s3server import S3Server, bucket_of, use_s3_repository

PREFIX = "pitr/"


def locked_env(make_env: Any, s3: S3Server, cluster: Any, mode: str, days: int,
               retention: str, bucket_lock: bool = True) -> Env:
    env = make_env(cluster, f"retention = {{ {retention} }}")
    use_s3_repository(env, s3.new_bucket(object_lock=bucket_lock), s3.url)
    text = env.config_path.read_text().replace(
        'region = "us-east-1"', f'region = "us-east-1"\nobject_lock = {{ mode = "{mode}", '
                                f'days = {days} }}', 1)
    env.config_path.write_text(text)
    env.config = parse_config(text, env.config_path)
    return env


def heads(s3: S3Server, env: Env, prefix: str = "") -> dict[str, dict[str, Any]]:
    client = s3.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket_of(env), Prefix=PREFIX + prefix) for o in page.get("Contents", [])]
    return {k[len(PREFIX):]: client.head_object(Bucket=bucket_of(env), Key=k) for k in keys}


def versions(s3: S3Server, env: Env, prefix: str) -> list[str]:
    page = s3.client().list_object_versions(Bucket=bucket_of(env), Prefix=PREFIX + prefix)
    return [v["Key"] for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]


def test_every_object_is_locked_long_enough_for_what_depends_on_it(
        pg18, make_env, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    env = with_passphrase(locked_env(make_env, s3, pg18, "COMPLIANCE", 3, "window_days = 1"),
                          monkeypatch)
    env.commit_row()
    full = take_backup(env.instance, env.repo).manifest
    env.sql("INSERT INTO items(note) SELECT 'x' FROM generate_series(1, 500)")
    incremental = take_incremental(env.instance, env.repo, False).manifest
    env.commit_row()
    ship_wal(env.instance, env.repo)

    objects = heads(s3, env)
    assert any(k.startswith("_keys/epoch-") for k in objects) and any(
        "/wal/" in k for k in objects)
    for key, head in objects.items():
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        written = head["LastModified"]
        until = head["ObjectLockRetainUntilDate"]
        assert abs(until - (written + timedelta(days=3))) < timedelta(minutes=5), key
    # A full backup stays locked through the retention window and the interval to the
    # next full (here 3 days >= 1-day window + a day's interval + margin); what depends on
    # it is written later, so it is locked later still.
    full_until = min(h["ObjectLockRetainUntilDate"] for k, h in objects.items()
                     if f"/backups/{full.id}/" in k)
    assert full_until - full.stop_time >= timedelta(days=env.instance.retention.window_days)
    dependents = [h["ObjectLockRetainUntilDate"] for k, h in objects.items()
                  if f"/backups/{incremental.id}/" in k or "/wal/" in k]
    assert min(dependents) >= full_until - timedelta(seconds=1)
    # The data key's file is locked at least as long as the newest object it encrypts.
    wrap = max(h["ObjectLockRetainUntilDate"] for k, h in objects.items()
               if k.startswith("_keys/epoch-"))
    assert wrap >= max(dependents) - timedelta(minutes=1)
    checks = {c.name: c for c in run_checks(env.instance, env.repo, datetime.now(UTC))}
    assert checks["object lock"].ok, checks["object lock"].line()
    assert checks["encryption"].ok and "AES-256-GCM" in checks["encryption"].detail

    # Inside the lock, a delete fails (and says until when); nothing is lost.
    key = manifest_key("main", full.id)
    with pytest.raises(ObjectLockedError, match=f"object {key} is locked until"):
        env.repo.delete(key)
    assert read_catalog(env.repo, "main").backup(full.id) is not None


def lapse(s3: S3Server, env: Env, prefix: str, seconds: float = 2.0) -> datetime:
    """What an administrator with s3:BypassGovernanceRetention can do: shorten GOVERNANCE
    locks under `prefix` so they lapse in `seconds`."""
    client = s3.client()
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    page = client.list_object_versions(Bucket=bucket_of(env), Prefix=PREFIX + prefix)
    for version in page.get("Versions", []):
        client.put_object_retention(
            Bucket=bucket_of(env), Key=version["Key"], VersionId=version["VersionId"],
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
            BypassGovernanceRetention=True)
    return until


def test_expire_on_locked_objects_reports_and_later_completes(
        pg18, make_env, s3: S3Server) -> None:
    env = locked_env(make_env, s3, pg18, "GOVERNANCE", 1, "full_count = 1")
    backups = []
    for _ in range(2):
        env.commit_row()
        backups.append(take_backup(env.instance, env.repo).manifest)
        env.commit_row()
        ship_wal(env.instance, env.repo)
    old, new = backups

    plan, result = expire(env.instance, env.repo, dry_run=False)
    assert plan.delete_backups == [old.id] and plan.delete_wal
    assert result is not None and result.backups_deleted == [] and result.wal_deleted == 0
    locked = dict(result.locked)
    assert locked[f"backup {old.id}"] > datetime.now(UTC) + timedelta(hours=23)
    assert f"WAL from {plan.delete_wal[0].segment}" in locked
    text = expire_result_text(result)
    assert f"LOCKED backup {old.id}: Object Lock until" in text
    # Still whole and valid: the backup is only deleted once it can be deleted entirely.
    catalog = read_catalog(env.repo, "main")
    assert [b.id for b in catalog.backups] == [old.id, new.id] and not catalog.rejected

    until = max(lapse(s3, env, f"main/backups/{old.id}/"), lapse(s3, env, "main/wal/"),
                lapse(s3, env, "main/marks/"), lapse(s3, env, "main/baselines/"))
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.0)
    plan, result = expire(env.instance, env.repo, dry_run=False)
    assert result is not None and result.backups_deleted == [old.id] and not result.locked
    assert result.wal_deleted == len(plan.delete_wal) > 0
    # Really gone: no version and no delete marker is left behind to keep paying for.
    assert versions(s3, env, f"main/backups/{old.id}/") == []
    assert all(versions(s3, env, e.key) == [] for e in plan.delete_wal)
    assert [b.id for b in read_catalog(env.repo, "main").backups] == [new.id]


def test_check_warns_about_short_locks_and_unlockable_buckets(
        pg18, make_env, s3: S3Server) -> None:
    short = locked_env(make_env, s3, pg18, "GOVERNANCE", 1, "window_days = 7")
    check = {c.name: c for c in run_checks(short.instance, short.repo, datetime.now(UTC))}
    lock = check["object lock"]
    assert not lock.ok and not lock.critical
    assert "locked for 1 days, less than the 7-day retention window" in lock.line()
    assert lock.line().endswith("[warning]")

    plain = locked_env(make_env, s3, pg18, "GOVERNANCE", 30, "window_days = 7",
                       bucket_lock=False)
    check = {c.name: c for c in run_checks(plain.instance, plain.repo, datetime.now(UTC))}
    assert "no Object Lock configuration" in check["object lock"].line()
    assert check["object lock"].line().endswith("[warning]")
    # Writing there fails in one line naming the bucket's missing configuration.
    with pytest.raises(RepositoryError, match="ObjectLockConfiguration"):
        plain.repo.put_bytes("main/marks/x.json", b"{}")


def test_a_multipart_object_gets_its_lock_even_where_the_store_ignores_it_on_create(
        s3: S3Server, tmp_path) -> None:
    """moto (like some S3-compatible stores) drops lock headers on CreateMultipartUpload:
    the driver reads the retention back and sets it."""
    from pitrflow.config import ObjectLockConfig, RepositoryConfig
    from pitrflow.storage.s3 import S3Repository
    from pitrflow.storage.s3_client import settings_from_config

    bucket = s3.new_bucket(object_lock=True)
    repo = S3Repository(settings_from_config(RepositoryConfig(
        url=f"s3://{bucket}/pitr", endpoint_url=s3.url, region="us-east-1",
        object_lock=ObjectLockConfig("COMPLIANCE", 2))))
    src = tmp_path / "big"
    src.write_bytes(b"\0" * (9 * 1024 * 1024))  # over the single-PUT limit
    started = datetime.now(UTC)
    repo.put_file("main/backups/b/base.tar.zst", src)
    head = s3.client().head_object(Bucket=bucket, Key="pitr/main/backups/b/base.tar.zst")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] >= started + timedelta(days=2) - timedelta(seconds=1)
    with pytest.raises(ObjectLockedError):
        repo.delete("main/backups/b/base.tar.zst")
    assert repo.retained_until("main/backups/b/base.tar.zst") == head["ObjectLockRetainUntilDate"]
