"""The README's demo: a real PostgreSQL 18, real backups, a restore to a timestamp.

Runs everything through the `pitr` command, so each backup, ship and restore
is a Prefect flow run (on Prefect's ephemeral API unless PREFECT_API_URL
points at a server).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psycopg

from pitrflow.devtools.localpg import LocalCluster, default_bin_dir, world_traversable


def _work_dir() -> Path:
    chosen = os.environ.get("PITR_DEMO_DIR")
    if chosen:
        return Path(chosen).absolute()
    # As root the server runs as an unprivileged user, who must reach the
    # directory: /root is private, /var/tmp is not.
    return Path("/var/tmp/pitrflow-demo") if os.geteuid() == 0 else Path("demo-work").absolute()


def _free_port(start: int) -> int:
    import socket

    for port in range(start, start + 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free port")


IMPOSSIBLE_SUITE = """{
  "name": "demo.impossible",
  "table": "public.orders",
  "expectations": [
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1000000},
     "meta": {"why": "shows what a failed expectation looks like"}}
  ]
}
"""


def _checks_dir(work: Path) -> Path:
    """The team suites shipped in checks/, copied so the demo can add a failing one."""
    shipped = Path(__file__).resolve().parents[2] / "checks"
    target = work / "checks"
    if shipped.is_dir():
        shutil.copytree(shipped, target, dirs_exist_ok=True)
    target.mkdir(exist_ok=True)
    return target


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def pitr(config: Path, *args: str) -> None:
    command = [sys.executable, "-m", "pitrflow.cli", "--config", str(config), *args]
    print("$ pitr " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def insert_orders(conn: psycopg.Connection, n: int) -> list[int]:
    ids = []
    for i in range(n):
        row = conn.execute(
            "INSERT INTO orders(customer, amount) VALUES (%s, %s) RETURNING id",
            (f"customer-{i % 17}", 10 + i % 90)).fetchone()
        assert row is not None
        ids.append(int(row[0]))
        time.sleep(0.02)
    return ids


def main() -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    work = _work_dir()
    if work.exists():
        _stop_leftovers(work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    world_traversable(work)
    step(f"starting an embedded PostgreSQL 18 in {work}/source")
    source = LocalCluster(work / "source", _free_port(55432), default_bin_dir(),
                          settings={"summarize_wal": "on", "fsync": "on"})
    source.init()
    source.start()
    config = work / "pitrflow.toml"
    config.write_text(f"""[repository]
path = "{work / 'repo'}"

[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {source.port}
user = "postgres"
database = "postgres"
bin_dir = "{source.bin_dir}"

[instances.main.drill]
scratch_dir = "{work / 'drills'}"
checks_dir = "{_checks_dir(work)}"
freshness = {{ "public.orders" = "created_at" }}
max_lag_seconds = 3600
""")
    print(config.read_text())
    restored_port = _free_port(source.port + 1)
    try:
        with source.connect() as conn:
            conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL,"
                         " amount numeric NOT NULL, created_at timestamptz NOT NULL "
                         "DEFAULT clock_timestamp())")
            insert_orders(conn, 50)
            step("00:00 full backup (the seed's schedule, in compressed time)")
            pitr(config, "backup", "full", "main")
            step("workload, WAL shipped every '15 minutes'")
            insert_orders(conn, 20)
            pitr(config, "ship", "main")
            step("06:00 incremental backup")
            pitr(config, "backup", "incremental", "main")
            before = insert_orders(conn, 20)
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            target: datetime = row[0]
            print(f"target time: {target.isoformat()} (after order {before[-1]})")
            time.sleep(0.2)
            insert_orders(conn, 10)
            pitr(config, "ship", "main")
            step("12:00 incremental backup")
            pitr(config, "backup", "incremental", "main")
            step("a bad change: DELETE a third of the orders, then more workload")
            conn.execute("DELETE FROM orders WHERE id % 3 = 0")
            insert_orders(conn, 10)
            pitr(config, "ship", "main")
        step("what the repository holds")
        pitr(config, "info", "main")
        step("restore to the target time, between the two incrementals (dry run, then real)")
        pgdata = work / "restored"
        pitr(config, "restore", "main", "--to", target.isoformat(), "--pgdata", str(pgdata),
             "--dry-run")
        pitr(config, "restore", "main", "--to", target.isoformat(), "--pgdata", str(pgdata),
             "--port", str(restored_port))
        with psycopg.connect(host="127.0.0.1", port=restored_port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            got = [int(r[0]) for r in conn.execute("SELECT id FROM orders ORDER BY id")]
        want = list(range(1, before[-1] + 1))
        if got != want:
            print(f"MISMATCH: restored {len(got)} orders, expected {len(want)}")
            return 1
        print(f"\nrestored orders 1..{before[-1]}: exactly the rows committed by the target.")
        _stop_leftovers(work, only=pgdata)
        step("nightly recovery drill: a random point, pg_amcheck, pg_dump, Great Expectations")
        pitr(config, "drill", "main", "--to", "random")
        pitr(config, "info", "main")
        step("what a failing drill looks like: a team suite the data cannot meet")
        impossible = work / "checks" / "main" / "public.orders.json"
        impossible.write_text(IMPOSSIBLE_SUITE)
        failing = subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config", str(config),
                                  "drill", "main", "--to", "latest"], check=False)
        if failing.returncode == 0:
            print("MISMATCH: the impossible expectation passed")
            return 1
        print(f"\nthe failing drill exited with status {failing.returncode}; its artifacts and "
              "evidence are kept (see the error line above)")
        print("demo passed")
        return 0
    finally:
        _stop_leftovers(work)
        source.stop()


def _stop_leftovers(work: Path, only: Path | None = None) -> None:
    from pitrflow import procs
    from pitrflow.engines.postgres.binaries import PgBinaries, reachable_for

    user = "pitrflow" if os.geteuid() == 0 else None
    for pid_file in work.glob("*/postmaster.pid"):
        if only is not None and pid_file.parent != only:
            continue
        bins = reachable_for(PgBinaries(default_bin_dir(), 18), user)
        procs.run([bins.tool("pg_ctl"), "stop", "-D", str(pid_file.parent), "-m", "fast"],
                  user=user, check=False, what="pg_ctl")


if __name__ == "__main__":
    sys.exit(main())
