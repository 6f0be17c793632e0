"""Network faults between the driver and S3, injected by the test proxy in front of moto.

Backups, ship runs and restores ride out 5xx bursts, a slow link and a
download cut mid-body; an upload that keeps breaking fails the backup
cleanly: one line, no manifest, no object, no multipart upload left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.wal.walship import ship_wal
from pitrflow.errors import RepositoryError
from pitrflow.storage.s3_parts import SINGLE_PUT_LIMIT
from tests.conftest import Env, restored_ids
from tests.integration import test_pitr_postgres as pitr
from tests.s3server import TEST_MAX_ATTEMPTS, Request, S3Server, bucket_of, key_contains


@contextlib.contextmanager
def incompressible_table(env: Env, mib: int) -> Iterator[None]:
    """About `mib` MiB of random bytes, so the base backup needs a multipart upload."""
    env.sql("DROP TABLE IF EXISTS s3_blob")
    env.sql("CREATE TABLE s3_blob AS SELECT g, decode(string_agg(md5(random()::text || i), ''),"
            " 'hex') AS b FROM generate_series(1, %s) g, generate_series(1, 65536) i "
            "GROUP BY g", (mib,))
    try:
        yield
    finally:
        env.sql("DROP TABLE IF EXISTS s3_blob")


def is_complete_upload(req: Request) -> bool:
    return req.method == "POST" and "uploadId=" in req.query


def test_backup_ship_and_restore_ride_out_5xx_bursts_and_a_slow_link(
        pg18, make_s3_env, s3: S3Server) -> None:
    env: Env = make_s3_env(pg18)
    proxy = s3.proxy
    with incompressible_table(env, mib=20):
        env.commit_row()
        # Backup: two 503s in a row on part uploads (a burst), a 500 on completion,
        # every request delayed and the link held to 40 MB/s.
        parts = proxy.fail(503, Request.is_part_upload, fail=2, passes=1, times=4)
        complete = proxy.fail(500, is_complete_upload, times=1)
        proxy.slow(bytes_per_second=40e6, latency=0.05)
        backup = take_backup(env.instance, env.repo).manifest
        assert (parts.injected, complete.injected) == (4, 1), proxy.requests
        base = max((f for f in backup.files if f.name.endswith(".tar.zst")), key=lambda f: f.size)
        assert base.size > 2 * SINGLE_PUT_LIMIT, "the backup did not need a multipart upload"

    proxy.reset()
    last_id, after = env.commit_row()
    wal_puts = proxy.fail(503, key_contains("/wal/", Request.is_put), fail=1, passes=1, times=3)
    listings = proxy.fail(500, Request.is_listing, times=2)
    proxy.slow(bytes_per_second=40e6, latency=0.02)
    shipped = ship_wal(env.instance, env.repo)
    assert shipped.segments_shipped
    assert (wal_puts.injected, listings.injected) == (3, 2), proxy.requests

    proxy.reset()
    gets = proxy.fail(500, Request.is_object_get, fail=1, passes=1, times=3)
    cut = proxy.cut_responses(key_contains(".tar.zst", Request.is_object_get), times=1)
    proxy.slow(bytes_per_second=40e6, latency=0.02)
    outcome = pitr.restore(env, after, "restored")
    assert restored_ids(outcome.port) == list(range(1, last_id + 1))
    assert (gets.injected, cut.injected) == (3, 1), proxy.requests


def test_a_backup_whose_uploads_keep_breaking_fails_cleanly(
        pg18, make_s3_env, s3: S3Server) -> None:
    env: Env = make_s3_env(pg18)
    with incompressible_table(env, mib=20):
        cuts = s3.proxy.cut_requests(Request.is_part_upload)
        with pytest.raises(RepositoryError) as caught:
            take_backup(env.instance, env.repo)
    s3.proxy.reset()

    line = caught.value.one_line()
    assert "\n" not in line and "HINT:" in line
    assert ".tar.zst" in line and "failed" in line, line
    assert cuts.injected >= int(TEST_MAX_ATTEMPTS), "the proxy did not cut the uploads"
    bucket = bucket_of(env)
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if "/backups/" in k], keys
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    catalog = read_catalog(env.repo, "main")
    assert (catalog.backups, catalog.rejected) == ([], {})

    # Once the network is healthy again the next backup just works.
    take_backup(env.instance, env.repo)
    assert len(read_catalog(env.repo, "main").backups) == 1
