"""Retention, interrupted expires and verify with the repository in S3 (moto over HTTP)."""

from __future__ import annotations

from tests.conftest import Env
from tests.integration import test_retention_verify_check as shared


def test_retention_by_count_in_s3(pg18, make_s3_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_s3_env(pg18)
    shared.test_retention_by_count_keeps_chains_and_restores_inside_the_window(env)


def test_interrupted_expire_in_s3(pg18, make_s3_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_s3_env(pg18)
    shared.test_interrupted_expire_is_finished_by_the_next(env)


def test_verify_in_s3(pg18, make_s3_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_s3_env(pg18)
    shared.test_verify_names_every_bad_object(env)
