"""Helpers for the follow-mode tests: a source cluster of its own, a workload, a follower.

Each follow test kills, restarts or fails over its source, so it gets a fresh
cluster rather than the shared session one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pitrflow import procs
from pitrflow.config import Config, parse_config
from pitrflow.devtools.localpg import LocalCluster, default_bin_dir
from pitrflow.engines.postgres.binaries import PgBinaries, reachable_for, tool_major
from pitrflow.engines.postgres.wal.follow import FollowOutcome, follow_wal
from pitrflow.engines.postgres.wal.follow_status import FollowerStatus, read_status
from pitrflow.storage import open_repository
from pitrflow.storage.base import Repository
from tests.conftest import free_port


def follow_config(root: Path, port: int, *, interval: int = 1, synchronous: bool = False,
                  repository: str | None = None, extra: str = "") -> Config:
    repo = repository or f'path = "{root / "repo"}"'
    text = f"""
[repository]
{repo}

[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {port}
user = "postgres"
slot = "pitrflow_follow"
bin_dir = "{default_bin_dir()}"
partial_interval = {interval}
mark_interval = {interval}
synchronous = {str(synchronous).lower()}
follow_dir = "{root / 'spool'}"
{extra}
"""
    path = root / "pitr.toml"
    path.write_text(text)
    return parse_config(text, path)


def new_source(root: Path, name: str = "source") -> LocalCluster:
    cluster = LocalCluster(root / name, free_port(), default_bin_dir())
    cluster.init()
    cluster.start()
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, note text)")
    return cluster


def make_standby(primary: LocalCluster, data_dir: Path) -> LocalCluster:
    """A streaming standby of `primary` on its own port (for a failover)."""
    standby = LocalCluster(data_dir, free_port(), primary.bin_dir)
    data_dir.mkdir(mode=0o700)
    if standby.user:
        from pitrflow.engines.postgres.sysuser import chown_tree

        chown_tree(data_dir, standby.user)
    procs.run([primary.tool("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
               "-U", "postgres", "-D", str(data_dir), "-R", "-X", "stream", "--no-sync"],
              user=standby.user, what="pg_basebackup")
    set_port(standby, standby.port)
    standby.start()
    return standby


def set_port(cluster: LocalCluster, port: int) -> None:
    cluster.port = port
    with open(cluster.data_dir / "postgresql.auto.conf", "a") as handle:
        handle.write(f"\nport = {port}\nunix_socket_directories = '{cluster.socket_dir}'\n")


@dataclass
class Workload:
    """Commits one row per transaction until stopped; keeps each acknowledged commit's time."""

    cluster: LocalCluster
    synchronous_commit: str = "on"
    acked: list[tuple[int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    note: str = "x"
    pause: float = 0.005

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(host="127.0.0.1", port=self.cluster.port, user="postgres",
                                     dbname="postgres", autocommit=True,
                                     connect_timeout=2) as conn:
                    conn.execute(f"SET synchronous_commit = {self.synchronous_commit}")
                    while not self.stop.is_set():
                        row = conn.execute("INSERT INTO items(note) VALUES (%s) RETURNING id",
                                           (self.note,)).fetchone()
                        assert row is not None
                        self.acked.append((int(row[0]), time.time()))
                        time.sleep(self.pause)
            except psycopg.Error:
                time.sleep(0.1)  # the source restarts, fails over, or is gone: try again

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def ids_before(self, moment: float) -> set[int]:
        return {i for i, t in self.acked if t < moment}


class FollowerThread:
    """follow_wal in a thread of this process, stoppable through its event."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = threading.Event()
        self.outcome: FollowOutcome | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.outcome = follow_wal(self.config.instance("main"),
                                      open_repository(self.config.repository), self.stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self.error = exc

    def __enter__(self) -> FollowerThread:
        self.thread.start()
        return self

    def finish(self) -> FollowOutcome:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the follower did not stop"
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.finish()


def wait_for(what: str, condition: Callable[[], object], seconds: float = 60.0) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(repo: Repository) -> FollowerStatus | None:
    return read_status(repo, "main")


def receiver_caught_up(cluster: LocalCluster, slot: str = "pitrflow_follow") -> bool:
    """The server's flushed WAL has all been written by our receiver."""
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT r.write_lsn >= pg_current_wal_flush_lsn() FROM pg_replication_slots s "
            "JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = %s",
            (slot,)).fetchone()
    return bool(row and row[0])


def standby_caught_up(primary: LocalCluster, standby: LocalCluster) -> bool:
    """The standby has replayed everything the primary flushed (nothing an async failover
    would lose)."""
    with primary.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    with standby.connect() as conn:
        replayed = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                (row[0] if row else "0/0",)).fetchone()
    return bool(replayed and replayed[0])


def stop_all(root: Path, bin_dir: Path, user: str | None) -> None:
    """Stop every cluster a test left running under `root`."""
    if user is not None:
        # As the clusters were started: from a copy the user can reach when the clone's
        # virtualenv is in a directory only root can enter.
        major = tool_major(str(bin_dir / "pg_ctl")) or 0
        bin_dir = reachable_for(PgBinaries(bin_dir, major), user).bin_dir
    for pid_file in root.glob("*/postmaster.pid"):
        procs.run([str(bin_dir / "pg_ctl"), "stop", "-D", str(pid_file.parent), "-m",
                   "immediate", "-w"], user=user, check=False, what="pg_ctl")
