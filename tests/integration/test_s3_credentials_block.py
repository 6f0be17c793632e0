"""S3 keys from a Prefect Secret block named in repository.credentials_block.

Runs on a temporary Prefect API (prefect_test_harness).  moto is switched to
checking keys: the environment's keys are unknown to it, the block's belong to
a user with no permissions, so "access denied" (rather than "rejected the
credentials") proves the block's keys signed the request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pitrflow.config import RepositoryConfig
from pitrflow.errors import RepositoryError
from pitrflow.storage import s3_credentials
from pitrflow.storage.s3 import S3Repository
from tests.integration.test_s3_errors import moto_checks_credentials
from tests.s3server import S3Server


@pytest.fixture
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    previous = s3_credentials._resolver
    with prefect_test_harness(server_startup_timeout=120):
        yield
    s3_credentials._resolver = previous


def test_a_secret_block_supplies_the_keys(prefect_api: None, s3: S3Server) -> None:
    from prefect.blocks.system import Secret

    import tasks.runtime  # noqa: F401 - registers the block resolvers, as every task does

    bucket = s3.new_bucket()
    repo = S3Repository.from_config(RepositoryConfig(
        url=f"s3://{bucket}/pitr", endpoint_url=s3.url, region="us-east-1",
        credentials_block="pitr-s3-keys"))
    with moto_checks_credentials(s3) as powerless:
        Secret(value={"aws_access_key_id": powerless["AWS_ACCESS_KEY_ID"],
                      "aws_secret_access_key": powerless["AWS_SECRET_ACCESS_KEY"]},
               ).save("pitr-s3-keys")
        with pytest.raises(RepositoryError, match="access denied for listing") as caught:
            list(repo.list("main/"))
    assert powerless["AWS_SECRET_ACCESS_KEY"] not in caught.value.one_line()
