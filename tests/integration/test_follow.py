"""Follow mode against a real PostgreSQL 18: the source killed, restarted, failed over.

Each test commits continuously while the follower runs, then restores to
latest and compares the restored rows with the commits the workload saw
acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from pitrflow.devtools.localpg import LocalCluster, default_bin_dir
from pitrflow.engines.postgres.backup.basebackup import take_backup
from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from pitrflow.engines.postgres.health import run_checks
from pitrflow.engines.postgres.render import info_text, plan_text
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore
from pitrflow.engines.postgres.restore.planner import RestorePlan, RestoreTarget, plan_restore
from pitrflow.engines.postgres.wal.walship import find_gaps
from pitrflow.storage import open_repository
from tests.conftest import free_port, restored_ids
from tests.integration.follow_helpers import (
    FollowerThread,
    Workload,
    follow_config,
    new_source,
    receiver_caught_up,
    status,
    stop_all,
    wait_for,
)
from tests.s3server import S3Server


@pytest.fixture
def root(work_root: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    # Long names are cut, so a digest of the whole node id keeps parametrized runs apart.
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    path = work_root / f"follow-{request.node.name[:50]}-{digest}".replace("[", "-").replace(
        "]", "")
    path.mkdir()
    yield path
    stop_all(path, default_bin_dir(), LocalCluster(path, 0, default_bin_dir()).user)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["fs", "s3"])
def repository(request: pytest.FixtureRequest) -> str | None:
    """None: a directory; else the [repository] lines of a fresh bucket behind moto."""
    if request.param == "fs":
        return None
    s3: S3Server = request.getfixturevalue("s3")
    return (f'url = "s3://{s3.new_bucket()}/pitr"\nendpoint_url = "{s3.url}"\n'
            'region = "us-east-1"')


def restore_latest(config, root: Path, name: str = "restored") -> tuple[RestorePlan, list[int]]:  # type: ignore[no-untyped-def]
    repo = open_repository(config.repository)
    plan = plan_restore(read_catalog(repo, "main"), RestoreTarget(None))
    port = free_port()
    execute_restore(plan, RestoreRequest(config.instance("main"), root / name, port), repo)
    return plan, restored_ids(port)


def test_killed_source_restores_every_commit_older_than_partial_interval(
        root: Path, repository: str | None) -> None:
    source = new_source(root)
    config = follow_config(root, source.port, interval=1, repository=repository)
    repo = open_repository(config.repository)
    take_backup(config.instance("main"), repo)
    work = Workload(source)
    with FollowerThread(config) as follower:
        wait_for("the first mark", lambda: read_catalog(repo, "main").marks)
        work.start()
        wait_for("commits", lambda: len(work.acked) > 200)
        time.sleep(2)
        kill_time = time.time()
        source.kill()
        work.stop.set()
        wait_for("the follower to see the source gone",
                 lambda: (s := status(repo)) is not None and s.state == "reconnecting")
        outcome = follower.finish()
    assert outcome.partials_stored > 0 and outcome.marks_written > 0
    assert status(repo).state == "stopped"  # type: ignore[union-attr]

    # pitr info and the plan say the recoverable point lies in a partial segment.
    cli = subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config", str(config.source),
                          "info", "main", "--json"], capture_output=True, text=True, check=True)
    latest = json.loads(cli.stdout)["recoverable"]["latest"]
    assert latest["partial"] is True and latest["read_at"]
    assert "PARTIAL segment" in info_text(read_catalog(repo, "main"))

    plan, restored = restore_latest(config, root)

    assert plan.partial is not None, "the tail of the WAL is the partial segment"
    assert "PARTIAL segment" in plan_text(plan) and plan.partial.segment == latest["segment"]
    promised = work.ids_before(kill_time - config.instance("main").partial_interval)
    assert promised and promised <= set(restored)
    # Nothing restored that the source never committed (ids are handed out in order).
    assert set(restored) <= set(range(1, max(i for i, _ in work.acked) + 2))


def test_synchronous_receiver_loses_no_acknowledged_commit(root: Path) -> None:
    source = new_source(root)
    config = follow_config(root, source.port, interval=2, synchronous=True)
    instance = config.instance("main")
    repo = open_repository(config.repository)
    with source.connect() as conn:
        conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{instance.slot_name}'")
        conn.execute("SELECT pg_reload_conf()")
    take_backup(instance, repo)
    work = Workload(source, synchronous_commit="on")
    with FollowerThread(config) as follower:
        wait_for("the first mark", lambda: read_catalog(repo, "main").marks)
        checks = {c.name: c for c in run_checks(instance, repo, datetime.now(UTC))}
        work.start()
        wait_for("commits", lambda: len(work.acked) > 200)
        source.kill()
        work.stop.set()
        follower.finish()
    assert checks["synchronous standby"].ok, checks["synchronous standby"].line()
    assert checks["follower"].ok, checks["follower"].line()

    plan, restored = restore_latest(config, root)

    acked = {i for i, _ in work.acked}
    assert acked and acked <= set(restored), sorted(acked - set(restored))[:10]
    assert plan.partial is not None


def test_restart_and_failover_while_following_leave_no_gap(root: Path) -> None:
    from tests.integration.follow_helpers import make_standby, set_port, standby_caught_up

    source = new_source(root, "primary")
    standby = make_standby(source, root / "standby")
    config = follow_config(root, source.port, interval=1)
    repo = open_repository(config.repository)
    take_backup(config.instance("main"), repo)
    work = Workload(source)
    with FollowerThread(config) as follower:
        wait_for("the first mark", lambda: read_catalog(repo, "main").marks)
        writer = work.start()
        wait_for("commits", lambda: len(work.acked) > 100)
        source.stop("fast")  # a restart of the source
        source.start()
        wait_for("commits after the restart", lambda: len(work.acked) > 300)
        # An asynchronous failover loses what the standby had not replayed: that loss is
        # the failover's, not the follower's, so the standby is let catch up first.
        work.stop.set()
        writer.join(timeout=30)
        wait_for("the standby to catch up", lambda: standby_caught_up(source, standby))
        wait_for("the receiver to catch up", lambda: receiver_caught_up(source))
        # A failover: the primary goes, the standby takes its address and is promoted.
        source.stop("fast")
        standby.stop("fast")
        set_port(standby, source.port)
        standby.start()
        work.cluster = standby
        from pitrflow import procs

        procs.run([standby.tool("pg_ctl"), "promote", "-D", str(standby.data_dir), "-w"],
                  user=standby.user, what="pg_ctl promote")
        work.stop.clear()
        writer = work.start()
        wait_for("commits and a mark on the new timeline",
                 lambda: len(work.acked) > 500 and (m := read_catalog(repo, "main").newest_mark)
                 is not None and m.timeline == 2, seconds=120)
        work.stop.set()
        writer.join(timeout=30)
        wait_for("the receiver to catch up", lambda: receiver_caught_up(standby))
        follower.finish()

    catalog = read_catalog(repo, "main")
    assert 2 in catalog.histories and catalog.histories[2][0].parent == 1
    assert catalog.newest_mark is not None and catalog.newest_mark.timeline == 2
    backup = catalog.backups[0]
    assert find_gaps(catalog, 2, backup.start_lsn) == []
    plan, restored = restore_latest(config, root)
    assert plan.timeline == 2
    assert {i for i, _ in work.acked} <= set(restored)


def _start_cli_follower(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "pitrflow.cli", "--config",
                                 str(config_path), "ship", "main", "--follow"],
                                stdout=sink, stderr=sink)


def _every_object_is_whole(repo, config) -> None:  # type: ignore[no-untyped-def]
    """Nothing valid-looking is half-written: every WAL and partial object is what its key says."""
    catalog = read_catalog(repo, "main")
    for info in repo.list("main/"):
        assert ".tmp-" not in info.key and ".probe-" not in info.key, info.key
    for entry in [*catalog.wal_entries(), *catalog.partials]:
        data = repo.get_bytes(entry.key)
        assert hashlib.sha256(data).hexdigest() == entry.sha256, entry.key
        assert len(zstandard.ZstdDecompressor().decompress(data)) == catalog.segment_size


def test_sigterm_mid_upload_leaves_nothing_half_written_and_a_restart_resumes(
        root: Path, repository: str | None) -> None:
    source = new_source(root)
    config = follow_config(root, source.port, interval=1, repository=repository)
    repo = open_repository(config.repository)
    take_backup(config.instance("main"), repo)
    # Wide incompressible rows: a segment completes every second or so, so uploads
    # (segments and partials) go on nearly all the time.
    work = Workload(source, note=os.urandom(50_000).hex(), pause=0.0)
    log = root / "follower.log"
    proc = _start_cli_follower(config.source, log)
    try:
        wait_for("the first mark", lambda: read_catalog(repo, "main").marks)
        writer = work.start()
        wait_for("segments streaming", lambda: len(read_catalog(repo, "main").wal_entries()) > 4)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "follower of main stopped" in log.read_text()
        stopped = status(repo)
        assert stopped is not None and stopped.state == "stopped"
        _every_object_is_whole(repo, config)
        stored_at_stop = len(read_catalog(repo, "main").wal_entries())

        proc = _start_cli_follower(config.source, log)
        wait_for("a newer mark after the restart",
                 lambda: (m := read_catalog(repo, "main").newest_mark) is not None
                 and m.time > stopped.updated_at)
        wait_for("more segments",
                 lambda: len(read_catalog(repo, "main").wal_entries()) > stored_at_stop + 3)
        work.stop.set()
        writer.join(timeout=30)  # no commit may still be in flight
        wait_for("the receiver to catch up", lambda: receiver_caught_up(source))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        work.stop.set()
        if proc.poll() is None:
            proc.kill()
    _every_object_is_whole(repo, config)
    catalog = read_catalog(repo, "main")
    assert find_gaps(catalog, 1, catalog.backups[0].start_lsn) == []
    plan, restored = restore_latest(config, root)
    missing = sorted({i for i, _ in work.acked} - set(restored))
    assert not missing, (missing[:3], len(missing), plan.reasons, plan.last_segment,
                         log.read_text()[-4000:])


def test_follower_killed_with_the_source_still_holds_commits_older_than_partial_interval(
        root: Path) -> None:
    """Site loss: the follower dies with the source, so only its periodic uploads count."""
    source = new_source(root)
    config = follow_config(root, source.port, interval=2)
    repo = open_repository(config.repository)
    take_backup(config.instance("main"), repo)
    work = Workload(source)
    proc = _start_cli_follower(config.source, root / "follower.log")
    try:
        wait_for("the first mark", lambda: read_catalog(repo, "main").marks)
        work.start()
        wait_for("commits", lambda: len(work.acked) > 300)
        time.sleep(3)
        kill_time = time.time()
        proc.kill()
        source.kill()
        work.stop.set()
        proc.wait(timeout=30)
    finally:
        work.stop.set()
        if proc.poll() is None:
            proc.kill()
    _every_object_is_whole(repo, config)
    plan, restored = restore_latest(config, root)
    promised = work.ids_before(kill_time - config.instance("main").partial_interval)
    assert plan.partial is not None
    assert promised and promised <= set(restored), sorted(promised - set(restored))[:10]


def test_with_follow_mode_on_ship_logs_checks_the_follower_instead_of_shipping(
        root: Path) -> None:
    from pitrflow.engines.postgres.wal.walship import ship_wal
    from pitrflow.errors import FollowerError

    source = new_source(root)
    config = follow_config(root, source.port, interval=1, extra="follow = true")
    instance = config.instance("main")
    repo = open_repository(config.repository)
    take_backup(instance, repo)
    with FollowerThread(config):
        wait_for("the first mark", lambda: read_catalog(repo, "main").marks)
        wait_for("a recovery point", lambda: (s := status(repo)) and s.recovery_point)
        outcome = ship_wal(instance, repo)
        checks = {c.name: c for c in run_checks(instance, repo, datetime.now(UTC))}
    assert outcome.follower is not None and outcome.segments_shipped == []
    assert outcome.mark.lsn == read_catalog(repo, "main").newest_mark.lsn  # type: ignore[union-attr]
    assert checks["follower"].ok and "lag" in checks["follower"].detail
    assert checks["replication slot"].ok

    with pytest.raises(FollowerError, match="the follower of main was stopped"):
        ship_wal(instance, repo)
    checks = {c.name: c for c in run_checks(instance, repo, datetime.now(UTC))}
    assert not checks["follower"].ok and checks["follower"].critical
