"""Point-in-time recovery with the repository in S3 (moto's server over HTTP, through the proxy).

The exactness test of the filesystem repository runs unchanged: only the
[repository] of the config differs.  Nothing of the repository may land on
the worker's disk.
"""

from __future__ import annotations

from tests.conftest import Env
from tests.integration import test_pitr_postgres as pitr
from tests.s3server import S3Server, bucket_of


def test_restores_land_exactly_on_committed_rows_in_s3(pg18, make_s3_env, s3: S3Server,
                                                        ) -> None:
    env: Env = make_s3_env(pg18)

    pitr.test_restores_land_exactly_on_committed_rows(env)

    assert not (env.root / "repo").exists(), "an S3 repository wrote to the local disk"
    keys = [o["Key"] for page in s3.client().get_paginator("list_objects_v2")
            .paginate(Bucket=bucket_of(env)) for o in page.get("Contents", [])]
    assert all(k.startswith("pitr/main/") for k in keys), keys
    assert sum("/backups/" in k and k.endswith("/manifest.json") for k in keys) == 2
    assert any("/wal/" in k for k in keys) and any("/marks/" in k for k in keys)
    uploads = s3.client().list_multipart_uploads(Bucket=bucket_of(env)).get("Uploads", [])
    assert uploads == []
    # Every request went through the proxy (the config names it), as a worker's would.
    assert any(r.startswith("PUT ") for r in s3.proxy.requests)
