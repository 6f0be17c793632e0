"""A server built without zstd (the embedded PostgreSQL 18), asked to compress by
compress = "server" or to stage a cluster with tablespaces: the first backup finds out
and remembers; later ones do not ask it again, so no refused pg_basebackup in their log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pitrflow.devtools.localpg import default_bin_dir
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.binaries import client_compresses_with
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
    # The wheel's pg_basebackup has no zstd either: it is probed, never tried on a backup.
    assert not [r for r in caplog.messages if "error" in r.lower()], caplog.messages
    assert any("client-zstd:level=1 (this pg_basebackup has no zstd)" in n
               for n in second.notes), second.notes
    assert any("server-zstd (found 20" in n and "remembered" in n for n in second.notes), \
        second.notes
    catalog = read_catalog(env.repo, "main")
    assert [b.id for b in catalog.backups] == [first.manifest.id, second.manifest.id]
    assert all(b.extra["tablespaces"] for b in catalog.backups)


@pytest.mark.parametrize("which", ["embedded", "system15"])
def test_the_compression_probe_asks_the_binary_without_a_server(which: str) -> None:
    bin_dir = default_bin_dir() if which == "embedded" else Path("/usr/lib/postgresql/15/bin")
    if not (bin_dir / "pg_basebackup").exists():
        pytest.skip(f"no {bin_dir}/pg_basebackup here")
    tool = str(bin_dir / "pg_basebackup")
    client_compresses_with.cache_clear()
    # The wheel is built without zstd and lz4; Debian's 15 with all three.
    assert client_compresses_with(tool, "gzip") is True
    assert client_compresses_with(tool, "zstd") is (which == "system15")
    assert client_compresses_with(tool, "lz4") is (which == "system15")
    assert not Path("/nonexistent-pitrflow-probe").exists()
