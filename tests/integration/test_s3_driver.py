"""The S3 driver's own promises, against moto's server over HTTP (no PostgreSQL needed).

The shared repository contract runs in tests/unit/test_storage_fs.py; these
cover what only an object store has: multipart uploads with bounded memory
and concurrency, checksums kept with objects, aborts that leave no parts,
downloads that resume after a cut, encryption settings, and credentials
from a named block.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitrflow.config import RepositoryConfig
from pitrflow.errors import ConfigError, RepositoryError
from pitrflow.storage import s3_credentials
from pitrflow.storage.s3 import S3Repository
from pitrflow.storage.s3_client import settings_from_config
from pitrflow.storage.s3_credentials import AwsKeys
from pitrflow.storage.s3_parts import GIB, MIB, START_PART_SIZE
from tests.integration.test_s3_errors import moto_checks_credentials
from tests.s3server import Request, S3Server

PREFIX = "repo/"


def make_repo(s3: S3Server, bucket: str, *, via_proxy: bool = True, **extra: str) -> S3Repository:
    config = RepositoryConfig(url=f"s3://{bucket}/repo", region="us-east-1",
                              endpoint_url=s3.proxy.url if via_proxy else s3.url, **extra)
    return S3Repository.from_config(config)


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


@pytest.fixture
def repo(s3: S3Server, bucket: str) -> S3Repository:
    return make_repo(s3, bucket)


def pending_uploads(s3: S3Server, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.client().list_multipart_uploads(Bucket=bucket)
            .get("Uploads", [])]


def chunks(total: int, size: int) -> Iterator[bytes]:
    """Incompressible bytes, made as they are written (the test holds none of them)."""
    while total > 0:
        piece = os.urandom(min(size, total))
        total -= len(piece)
        yield piece


def test_a_large_stream_goes_up_in_parts_with_bounded_memory(
        s3: S3Server, bucket: str) -> None:
    repo = make_repo(s3, bucket, via_proxy=False)  # the proxy would buffer in this process
    repo.put_bytes("warm-up", b"x")
    total = 10 * START_PART_SIZE + 12345
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        writer = repo.open_writer("main/backups/b1/base.tar.zst")
        for piece in chunks(total, 1_000_003):
            digest.update(piece)
            writer.write(piece)
        info = writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (info.size, info.sha256) == (total, digest.hexdigest())
    # The part being filled plus at most two in flight: a few parts, never the object.
    assert peak < 4 * START_PART_SIZE, f"peak Python memory {peak / MIB:.0f} MiB"
    head = s3.client().head_object(Bucket=bucket, Key=PREFIX + "main/backups/b1/base.tar.zst")
    assert head["ETag"].endswith('-11"'), head["ETag"]  # ten full parts and the tail
    assert repo.recorded_sha256("main/backups/b1/base.tar.zst") == digest.hexdigest()
    assert pending_uploads(s3, bucket) == []
    reader = repo.open_reader("main/backups/b1/base.tar.zst")
    check = hashlib.sha256()
    while data := reader.read(3 * MIB):
        check.update(data)
    reader.close()
    assert check.hexdigest() == digest.hexdigest()


def test_parts_too_big_for_memory_spill_to_a_temporary_file(s3: S3Server, bucket: str) -> None:
    repo = make_repo(s3, bucket, via_proxy=False)
    repo.put_bytes("warm-up", b"x")
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        # Declared as 200 GiB, so its parts are 32 MiB: above what a part may hold in memory.
        writer = repo.open_writer("main/backups/b1/base.tar.zst", expected_size=200 * GIB)
        for piece in chunks(32 * MIB + 5 * MIB, MIB):
            digest.update(piece)
            writer.write(piece)
        info = writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.sha256 == digest.hexdigest()
    assert peak < 24 * MIB, f"peak Python memory {peak / MIB:.0f} MiB"
    head = s3.client().head_object(Bucket=bucket, Key=PREFIX + "main/backups/b1/base.tar.zst")
    assert head["ETag"].endswith('-2"') and head["ContentLength"] == 37 * MIB


def test_parts_upload_two_at_a_time_and_no_more(s3: S3Server, repo: S3Repository) -> None:
    s3.proxy.slow(bytes_per_second=200e6, latency=0.1)  # so part uploads overlap
    writer = repo.open_writer("main/backups/b1/base.tar.zst")
    for piece in chunks(5 * START_PART_SIZE, MIB):
        writer.write(piece)
    writer.commit()
    assert s3.proxy.peak_in_flight == 2


def test_small_objects_are_one_put_with_their_sha256_in_metadata(
        s3: S3Server, bucket: str, repo: S3Repository) -> None:
    info = repo.put_bytes("main/marks/m.json", b"{}")
    assert [r.split(" ")[0] for r in s3.proxy.requests] == ["PUT"]
    head = s3.client().head_object(Bucket=bucket, Key=PREFIX + "main/marks/m.json")
    assert head["Metadata"] == {"sha256": info.sha256}


def test_put_file_of_a_large_file_records_its_sha256_in_metadata(
        s3: S3Server, bucket: str, repo: S3Repository, tmp_path: Path) -> None:
    src = tmp_path / "big"
    with open(src, "wb") as handle:
        for piece in chunks(2 * START_PART_SIZE + 1, MIB):
            handle.write(piece)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    info = repo.put_file("main/backups/b1/pg_wal.tar", src, move=True)
    assert info.sha256 == sha and not src.exists()
    head = s3.client().head_object(Bucket=bucket, Key=PREFIX + "main/backups/b1/pg_wal.tar")
    assert head["Metadata"] == {"sha256": sha} and head["ETag"].endswith('-3"')


def test_abort_leaves_no_object_and_no_parts(s3: S3Server, bucket: str,
                                            repo: S3Repository) -> None:
    writer = repo.open_writer("main/backups/b1/base.tar.zst")
    for piece in chunks(3 * START_PART_SIZE, MIB):
        writer.write(piece)
    assert pending_uploads(s3, bucket) == [PREFIX + "main/backups/b1/base.tar.zst"]
    writer.abort()
    assert pending_uploads(s3, bucket) == []
    assert list(repo.list("")) == []


def test_a_cut_download_resumes_where_it_broke(s3: S3Server, repo: S3Repository) -> None:
    data = b"".join(chunks(3 * MIB + 7, MIB))
    repo.put_bytes("main/wal/seg", data)
    cuts = s3.proxy.cut_responses(Request.is_object_get, times=2)
    reader = repo.open_reader("main/wal/seg")
    got = reader.read()
    reader.close()
    assert got == data
    assert cuts.injected == 2
    ranges = [r for r in s3.proxy.requests if r.startswith("GET ")]
    assert len(ranges) == 3


def test_an_object_replaced_mid_read_is_refused(s3: S3Server, bucket: str,
                                                repo: S3Repository) -> None:
    repo.put_bytes("main/backups/b1/base.tar.zst", b"".join(chunks(4 * MIB, MIB)))
    s3.proxy.cut_responses(Request.is_object_get, times=1)
    reader = repo.open_reader("main/backups/b1/base.tar.zst")
    s3.client().put_object(Bucket=bucket, Key=PREFIX + "main/backups/b1/base.tar.zst",
                           Body=b"another version")
    with pytest.raises(RepositoryError, match="was replaced while it was being read"):
        while reader.read(MIB):
            pass


def test_storage_class_and_server_side_encryption_apply_to_every_upload(
        s3: S3Server, bucket: str) -> None:
    repo = make_repo(s3, bucket, storage_class="STANDARD_IA", sse="AES256")
    repo.put_bytes("main/small", b"x")
    writer = repo.open_writer("main/large")
    for piece in chunks(START_PART_SIZE + 1, MIB):
        writer.write(piece)
    writer.commit()
    for key in ("main/small", "main/large"):
        head = s3.client().head_object(Bucket=bucket, Key=PREFIX + key)
        assert (head["ServerSideEncryption"], head["StorageClass"]) == ("AES256", "STANDARD_IA")


def test_kms_encryption_names_its_key(s3: S3Server, bucket: str) -> None:
    import boto3

    kms = boto3.client("kms", endpoint_url=s3.url, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    repo = make_repo(s3, bucket, sse="aws:kms", sse_kms_key_id=key_id)
    repo.put_bytes("main/small", b"x")
    head = s3.client().head_object(Bucket=bucket, Key=PREFIX + "main/small")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]


@pytest.mark.parametrize("extra, words", [
    ({"sse": "AES-256"}, "repository.sse is 'AES-256'"),
    ({"sse": "AES256", "sse_kms_key_id": "k"}, "sse_kms_key_id is set but"),
])
def test_bad_encryption_settings_are_config_errors(extra: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        settings_from_config(RepositoryConfig(url="s3://b/p", **extra))


@pytest.fixture
def block_resolver() -> Iterator[list[str]]:
    asked: list[str] = []
    previous = s3_credentials._resolver
    yield asked
    s3_credentials._resolver = previous


def test_credentials_come_from_the_named_block_lazily(s3: S3Server, bucket: str,
                                                      block_resolver: list[str]) -> None:
    s3_credentials._resolver = None
    repo = make_repo(s3, bucket, credentials_block="prod-s3")
    with pytest.raises(ConfigError, match="names Prefect block 'prod-s3'"):
        repo.exists("main/x")  # resolution waits for the first request

    with moto_checks_credentials(s3) as powerless:
        def resolve(name: str) -> AwsKeys:
            block_resolver.append(name)
            return AwsKeys(powerless["AWS_ACCESS_KEY_ID"], powerless["AWS_SECRET_ACCESS_KEY"])

        s3_credentials.register_credentials_resolver(resolve)
        repo = make_repo(s3, bucket, credentials_block="prod-s3")
        # The environment's keys are unknown to moto now; the block's user exists but may
        # do nothing: "access denied" proves the block's keys signed the request.
        with pytest.raises(RepositoryError, match="access denied") as caught:
            list(repo.list("main/"))
    assert block_resolver == ["prod-s3"]
    assert powerless["AWS_SECRET_ACCESS_KEY"] not in caught.value.one_line()
    assert os.environ["AWS_ACCESS_KEY_ID"] != powerless["AWS_ACCESS_KEY_ID"]


def test_check_writable_names_a_missing_bucket(s3: S3Server) -> None:
    repo = make_repo(s3, "pitrflow-missing-bucket", via_proxy=False)
    with pytest.raises(RepositoryError, match="bucket pitrflow-missing-bucket does not exist"):
        repo.check_writable()
    assert repo.describe() == "s3://pitrflow-missing-bucket/repo"
