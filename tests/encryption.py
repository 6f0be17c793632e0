"""Helpers for tests of encrypted repositories: config, and what is really stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pitrflow.config import parse_config
from pitrflow.storage.crypto_format import MAGIC
from tests.conftest import Env

PASSPHRASE_ENV = "PITR_TEST_REPO_PASSPHRASE"
PASSPHRASE = "test passphrase: correct horse battery staple"


def encrypt_env(env: Env, table: str) -> Env:
    """Add [repository.encryption] (the lines in `table`) to a test's config file."""
    text = env.config_path.read_text() + f"\n[repository.encryption]\n{table}\n"
    env.config_path.write_text(text)
    env.config = parse_config(text, env.config_path)
    return env


def with_passphrase(env: Env, monkeypatch: pytest.MonkeyPatch, passphrase: str = PASSPHRASE,
                    var: str = PASSPHRASE_ENV) -> Env:
    monkeypatch.setenv(var, passphrase)
    return encrypt_env(env, f'passphrase_env = "{var}"')


def stored_fs(env: Env) -> dict[str, bytes]:
    """Every object a filesystem repository stores, but its key files: key -> bytes."""
    root = env.root / "repo"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith("_keys/")}


def stored_s3(client: Any, bucket: str, prefix: str = "pitr/") -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read()
            for k in keys if not k[len(prefix):].startswith("_keys/")}


def assert_all_encrypted(stored: dict[str, bytes]) -> None:
    assert stored, "nothing stored"
    plain = [key for key, data in stored.items() if not data.startswith(MAGIC)]
    assert plain == [], f"stored unencrypted: {plain}"
    # Nothing readable leaks: not the manifests' JSON, not the tar headers of the backup.
    for key, data in stored.items():
        assert b'"instance"' not in data and b"PG_VERSION" not in data, key


def key_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "_keys").iterdir()) if (root / "_keys").is_dir() else []
