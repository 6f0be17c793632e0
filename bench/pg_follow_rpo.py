"""RPO of follow mode, and the WAL rate the follower keeps up with (PostgreSQL 18, embedded).

    python bench/pg_follow_rpo.py [--commit-seconds 8] [--interval 10] [--wal-mb 1024]

RPO: a workload commits one row per transaction and records when each commit
was acknowledged; the source is SIGKILLed and its data directory deleted; the
repository is restored to latest; the report gives how many acknowledged
commits are missing and how many seconds of acknowledged commits that is
(the kill time minus the acknowledgement of the oldest missing commit).
Three scenarios:
- async: the follower survives the source and flushes what it received;
- sync: the same with `synchronous = true` (the receiver a synchronous standby);
- site loss: the follower is SIGKILLed with the source, so only its periodic
  partial uploads count (bounded by partial_interval plus one upload).

Throughput: WAL is generated with the follower stopped (the slot keeps it),
then the follower is started and timed until everything is stored (zstd,
filesystem repository): the WAL rate it sustains.  A second run generates
WAL with the follower running and reports the server's rate and the catch-up
time after the load stops.  The rows are four copies of an md5 in hex; the
report gives the WAL's compression ratio (about 5x measured), so a reader can
weigh the rate against WAL that compresses less.

Run it on a quiet machine: it warns of nothing that disturbs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pitrflow.config import Config, parse_config  # noqa: E402
from pitrflow.devtools.localpg import LocalCluster, default_bin_dir, world_traversable  # noqa: E402
from pitrflow.engines.postgres.backup.basebackup import take_backup  # noqa: E402
from pitrflow.engines.postgres.catalog.snapshot import read_catalog  # noqa: E402
from pitrflow.engines.postgres.restore.executor import RestoreRequest, execute_restore  # noqa: E402
from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore  # noqa: E402
from pitrflow.engines.postgres.wal.follow import follow_wal  # noqa: E402
from pitrflow.engines.postgres.wal.walnames import parse_lsn  # noqa: E402
from pitrflow.storage import open_repository  # noqa: E402

PORTS = iter(range(57400, 57600))
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {text}", flush=True)


def port() -> int:
    import socket

    for candidate in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError("no free port")


def config_for(root: Path, cluster: LocalCluster, interval: int, synchronous: bool) -> Config:
    text = f"""
[repository]
path = "{root / 'repo'}"
[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {cluster.port}
user = "postgres"
slot = "pitrflow_bench"
bin_dir = "{cluster.bin_dir}"
partial_interval = {interval}
mark_interval = {interval}
synchronous = {str(synchronous).lower()}
follow_dir = "{root / 'spool'}"
"""
    (root / "pitr.toml").write_text(text)
    return parse_config(text, root / "pitr.toml")


def source(root: Path, synchronous: bool) -> LocalCluster:
    # Durable settings, unlike the test clusters: acknowledged means flushed.
    cluster = LocalCluster(root / "source", port(), default_bin_dir(),
                           settings={"fsync": "on", "synchronous_commit": "on"})
    cluster.init()
    cluster.start()
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE blob (id bigint, body text)")
    return cluster


def name_sync_standby(cluster: LocalCluster) -> None:
    """From here on every commit waits for the receiver (so only once it is there to answer)."""
    with cluster.connect() as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'pitrflow_bench'")
        conn.execute("SELECT pg_reload_conf()")


def commit_loop(cluster: LocalCluster, acked: list[tuple[int, float]],
                stop: threading.Event) -> None:
    try:
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("INSERT INTO items(note) VALUES ('x') RETURNING id").fetchone()
                acked.append((int(row[0]), time.time()))  # type: ignore[index]
    except psycopg.Error:
        pass  # the source was killed


def wait(what: str, condition: Any, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def restored_ids(config: Config, root: Path) -> list[int]:
    repo = open_repository(config.repository)
    plan = plan_restore(read_catalog(repo, "main"), RestoreTarget(None))
    restored_port = port()
    execute_restore(plan, RestoreRequest(config.instance("main"), root / "restored",
                                         restored_port), repo)
    try:
        with psycopg.connect(host="127.0.0.1", port=restored_port, user="postgres",
                             dbname="postgres") as conn:
            return [int(r[0]) for r in conn.execute("SELECT id FROM items")]
    finally:
        cluster = LocalCluster(root / "restored", restored_port, default_bin_dir())
        cluster.stop("immediate")


def rpo_run(scenario: str, commit_seconds: float, interval: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"pitrflow-rpo-{scenario}-", dir="/var/tmp"))
    world_traversable(root)
    synchronous = scenario == "sync"
    cluster = source(root, synchronous)
    config = config_for(root, cluster, interval, synchronous)
    repo = open_repository(config.repository)
    follower: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    stop = threading.Event()
    try:
        take_backup(config.instance("main"), repo)
        if scenario == "site-loss":  # a process of its own, to SIGKILL with the source
            follower = subprocess.Popen([sys.executable, "-m", "pitrflow.cli", "--config",
                                         str(config.source), "ship", "main", "--follow"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            thread = threading.Thread(target=follow_wal, args=(
                config.instance("main"), repo, stop), daemon=True)
            thread.start()
        wait("the first mark", lambda: read_catalog(repo, "main").marks)
        if synchronous:
            name_sync_standby(cluster)
        acked: list[tuple[int, float]] = []
        halt = threading.Event()
        writer = threading.Thread(target=commit_loop, args=(cluster, acked, halt), daemon=True)
        writer.start()
        time.sleep(commit_seconds)
        kill_time = time.time()
        if follower is not None:
            follower.kill()
        cluster.kill()
        shutil.rmtree(cluster.data_dir)  # the source is gone for good
        halt.set()
        writer.join(timeout=30)
        if thread is not None:
            stop.set()
            thread.join(timeout=120)
        restored = set(restored_ids(config, root))
        missing = [(i, t) for i, t in acked if i not in restored]
        oldest_missing = min((t for _, t in missing), default=None)
        return {"scenario": scenario, "partial_interval": interval,
                "acknowledged": len(acked), "lost_commits": len(missing),
                "lost_seconds": round(kill_time - oldest_missing, 3) if oldest_missing else 0.0,
                "commits_per_second": round(len(acked) / commit_seconds)}
    finally:
        stop.set()
        if follower is not None and follower.poll() is None:
            follower.kill()
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def generate_wal(cluster: LocalCluster, megabytes: int) -> tuple[int, float]:
    """Insert rows until the server has written `megabytes` of WAL; (bytes, seconds)."""
    with cluster.connect() as conn:
        start = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        began = time.monotonic()
        written = 0
        while written < megabytes * 1024 * 1024:
            conn.execute("INSERT INTO blob SELECT g, repeat(md5(random()::text), 4) "
                         "FROM generate_series(1, 20000) g")
            now = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
            written = now - start
        conn.execute("SELECT pg_switch_wal()")
        return written, time.monotonic() - began


def stored_through(repo: Any, lsn: int, size: int) -> bool:
    catalog = read_catalog(repo, "main")
    return bool(catalog.wal.get(1)) and (max(catalog.wal[1]) + 1) * size >= lsn


def throughput_run(megabytes: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="pitrflow-follow-rate-", dir="/var/tmp"))
    world_traversable(root)
    cluster = source(root, False)
    config = config_for(root, cluster, 10, False)
    repo = open_repository(config.repository)
    size = 16 * 1024 * 1024
    try:
        with cluster.connect() as conn:
            conn.execute("SELECT pg_create_physical_replication_slot('pitrflow_bench', true)")
        say(f"generating {megabytes} MB of WAL with the follower stopped")
        written, gen_seconds = generate_wal(cluster, megabytes)
        with cluster.connect() as conn:
            end = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        stop = threading.Event()
        began = time.monotonic()
        thread = threading.Thread(target=follow_wal, args=(config.instance("main"), repo, stop),
                                  daemon=True)
        thread.start()
        wait("the backlog to be stored", lambda: stored_through(repo, end - size, size), 3600)
        drain_seconds = time.monotonic() - began
        stored = sum(e.size for e in read_catalog(repo, "main").wal_entries())
        say(f"backlog stored in {drain_seconds:.1f} s; now WAL with the follower running")
        live_written, live_seconds = generate_wal(cluster, megabytes // 2)
        with cluster.connect() as conn:
            live_end = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        caught = time.monotonic()
        wait("the follower to catch up", lambda: stored_through(repo, live_end - size, size), 3600)
        catch_up = time.monotonic() - caught
        stop.set()
        thread.join(timeout=120)
        return {"wal_mb": round(written / 2**20), "generate_mb_s": round(written / 2**20 /
                                                                        gen_seconds, 1),
                "follower_backlog_mb_s": round(written / 2**20 / drain_seconds, 1),
                "stored_ratio": round(written / max(stored, 1), 2),
                "live_server_mb_s": round(live_written / 2**20 / live_seconds, 1),
                "live_catch_up_seconds": round(catch_up, 2), "cores": os.cpu_count()}
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit-seconds", type=float, default=8.0)
    parser.add_argument("--interval", type=int, default=10, help="partial_interval (seconds)")
    parser.add_argument("--wal-mb", type=int, default=1024)
    parser.add_argument("--skip-rate", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "rpo": []}
    for scenario in ("async", "sync", "site-loss"):
        say(f"RPO, {scenario}")
        row = rpo_run(scenario, args.commit_seconds, args.interval)
        say(f"  {row}")
        results["rpo"].append(row)
    if not args.skip_rate:
        results["throughput"] = throughput_run(args.wal_mb)
        say(f"  {results['throughput']}")
    out = Path(__file__).parent / f"results-follow-{datetime.now(UTC):%Y-%m-%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{'scenario':<10} {'acked':>7} {'lost':>6} {'lost s':>8}")
    for row in results["rpo"]:
        print(f"{row['scenario']:<10} {row['acknowledged']:>7} {row['lost_commits']:>6} "
              f"{row['lost_seconds']:>8.3f}")
    if "throughput" in results:
        t = results["throughput"]
        print(f"follower backlog rate {t['follower_backlog_mb_s']} MB/s of WAL "
              f"(target >= 50), server generated {t['generate_mb_s']} MB/s; live: server "
              f"{t['live_server_mb_s']} MB/s, catch-up {t['live_catch_up_seconds']} s")
    print(f"results: {out} ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
