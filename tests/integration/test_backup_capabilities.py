"""A server built without zstd (the embedded PostgreSQL 18), asked to compress by
compress = "server" or to stage a cluster with tablespaces: the first backup finds out
and remembers; later ones do not ask it again, so no refused pg_basebackup in their log."""

from __future__ import annotations

import logging

import pytest

from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.manifest import LAYOUT_BUNDLES
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from tests.conftest import Env


def test_a_server_without_zstd_is_probed_once(make_env, pg18,
                                              caplog: pytest.LogCaptureFixture) -> None:
    env: Env = make_env(pg18, 'compress = "server"')
    caplog.set_level(logging.INFO, logger="pitrflow")
    first = take_backup(env.instance, env.repo)
    refusals = [r for r in caplog.messages if "does not support compression" in r]
    assert refusals, "the embedded server was expected to refuse server-side zstd"
    assert any("cannot compress with zstd (found now, remembered)" in n
               for n in first.notes), first.notes
    caplog.clear()
    second = take_backup(env.instance, env.repo)
    assert not [r for r in caplog.messages if "does not support compression" in r]
    assert not [r for r in caplog.messages if "initiating base backup" in r][1:]
    assert any("(found 20" in n and "remembered" in n for n in second.notes), second.notes
    catalog = read_catalog(env.repo, "main")
    assert [b.layout for b in catalog.backups] == [LAYOUT_BUNDLES, LAYOUT_BUNDLES]


def test_a_cluster_with_tablespaces_asks_a_server_without_zstd_once(
        make_env, ts18, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(ts18.cluster)
    caplog.set_level(logging.INFO, logger="pitrflow")
    first = take_backup(env.instance, env.repo)
    server_refusals = [r for r in caplog.messages if "could not initiate base backup" in r]
    assert server_refusals, "the embedded server was expected to refuse server-side zstd"
    caplog.clear()
    second = take_backup(env.instance, env.repo)
    assert not [r for r in caplog.messages if "could not initiate base backup" in r]
    assert not [r for r in caplog.messages if "server-zstd" in r and "--compress" in r]
    assert any("server-zstd (found 20" in n and "remembered" in n for n in second.notes), \
        second.notes
    catalog = read_catalog(env.repo, "main")
    assert [b.id for b in catalog.backups] == [first.manifest.id, second.manifest.id]
    assert all(b.extra["tablespaces"] for b in catalog.backups)
