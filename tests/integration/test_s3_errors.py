"""S3 mistakes a user can make, as the `pitr` command shows them: one line, nothing changed.

Each case runs `python -m pitrflow.cli --config X info main` as a child process
against moto's server, and checks the single `error [repository]: ... HINT: ...`
line, the exit status, the absence of a traceback, and that nothing was created.
"""

from __future__ import annotations

import contextlib
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitrflow.errors import RepositoryError
from pitrflow.storage.s3_errors import S3Place, translate
from tests.conftest import free_port
from tests.integration.test_cli import assert_one_line_error, pitr
from tests.s3server import S3Server

REPOSITORY_EXIT = RepositoryError.exit_status


def s3_config(tmp_path: Path, url: str, endpoint: str) -> Path:
    path = tmp_path / "pitr.toml"
    path.write_text(f'[repository]\nurl = "{url}"\nendpoint_url = "{endpoint}"\n'
                    'region = "us-east-1"\n\n[instances.main]\nengine = "postgresql"\n'
                    'host = "127.0.0.1"\n')
    return path


def everything(s3: S3Server) -> dict[str, list[str]]:
    client = s3.client()
    return {b["Name"]: [o["Key"] for o in client.list_objects_v2(Bucket=b["Name"])
                        .get("Contents", [])]
            for b in client.list_buckets()["Buckets"]}


def test_a_missing_bucket_is_one_line_and_creates_nothing(s3: S3Server, tmp_path: Path) -> None:
    before = everything(s3)
    config = s3_config(tmp_path, "s3://no-such-pitrflow-bucket/prod", s3.url)
    result = pitr("--config", str(config), "info", "main")
    assert_one_line_error(result, "error [repository]: bucket no-such-pitrflow-bucket does not "
                          f"exist at {s3.url}", "HINT: create the bucket")
    assert result.returncode == REPOSITORY_EXIT
    assert everything(s3) == before


def test_a_wrong_endpoint_is_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = s3_config(tmp_path, "s3://pitrflow-bucket/prod", endpoint)
    result = pitr("--config", str(config), "info", "main", env_extra={"AWS_MAX_ATTEMPTS": "2"})
    assert_one_line_error(result, f"cannot reach the S3 endpoint {endpoint}",
                          "HINT: check repository.endpoint_url")
    assert result.returncode == REPOSITORY_EXIT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pitr.toml"]


def _moto_auth(s3: S3Server, unauthenticated_requests: str) -> None:
    request = urllib.request.Request(f"{s3.url}/moto-api/reset-auth", method="POST",
                                     data=unauthenticated_requests.encode(),
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10):
        pass


@contextlib.contextmanager
def moto_checks_credentials(s3: S3Server) -> Iterator[dict[str, str]]:
    """Make moto check keys and IAM policies; yields the keys of a user with no policy."""
    import boto3

    _moto_auth(s3, "2")  # the two IAM calls below go through unchecked
    try:
        iam = boto3.client("iam", endpoint_url=s3.url, region_name="us-east-1")
        user = f"pitrflow-nobody-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        yield {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        _moto_auth(s3, "inf")


def test_denied_access_and_rejected_keys_are_one_line_each(s3: S3Server,
                                                           tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    config = s3_config(tmp_path, f"s3://{bucket}/prod", s3.url)
    with moto_checks_credentials(s3) as powerless:
        denied = pitr("--config", str(config), "info", "main", env_extra=powerless)
        unknown = pitr("--config", str(config), "info", "main",
                       env_extra={"AWS_ACCESS_KEY_ID": "AKIAPITRFLOWUNKNOWN"})
    assert_one_line_error(denied, f"access denied for listing of s3://{bucket}/prod",
                          "HINT: allow the worker's credentials s3:ListBucket")
    assert_one_line_error(unknown, "rejected the credentials (InvalidAccessKeyId)",
                          f"s3://{bucket}/prod", "HINT: the keys are wrong or expired")
    assert "AKIAPITRFLOWUNKNOWN" not in unknown.stderr
    assert powerless["AWS_SECRET_ACCESS_KEY"] not in denied.stderr
    assert denied.returncode == unknown.returncode == REPOSITORY_EXIT


@pytest.mark.parametrize("code", ["ExpiredToken", "RequestExpired", "SignatureDoesNotMatch"])
def test_expired_or_bad_signatures_read_as_rejected_credentials(code: str) -> None:
    # moto does not expire session tokens, so these codes are checked on the error value itself.
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": code, "Message": "The provided token has expired."}},
                      "ListObjectsV2")
    error = translate(exc, S3Place("prod-backups", "pitr/", "https://s3.example"), "listing")
    assert error.one_line() == (
        f"error [repository]: https://s3.example rejected the credentials ({code}) for listing "
        "of s3://prod-backups/pitr HINT: the keys are wrong or expired: provide credentials "
        "through the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), "
        "AWS_PROFILE, an instance role, or a Prefect block named in "
        "repository.credentials_block")
