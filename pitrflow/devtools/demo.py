"""The README's demo: a real PostgreSQL 18, real backups, a restore to a timestamp.

It shows both sides of pitrflow.  The scheduled work runs as the Prefect flows
themselves, in this process, on Prefect's ephemeral API (one start-up for the
whole demo; a server if PREFECT_API_URL points at one), each publishing its
artifacts.  Beside them, the `pitr` command does the same work the way an
operator would at a terminal: with no Prefect server configured it runs the
core steps directly, so a restore needs nothing but the repository, the
config and the binaries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

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


def run_flow(name: str, **params: object) -> Any:
    """Run one of pitrflow's flows in this process, as a deployment would run it."""
    import importlib

    shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if k != "config_path")
    print(f">>> flow {name}({shown})", flush=True)
    flow = getattr(importlib.import_module(f"flows.{name}"), name)
    return flow(**params)


def show_artifacts(prefect_home: Path) -> None:
    """Where the flow runs' artifacts are, and what the newest of each says first."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> list[Any]:
        async with get_client() as client:
            return list(await client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=50))

    newest: dict[str, Any] = {}
    for artifact in asyncio.run(read()):
        if artifact.key and artifact.key not in newest:
            newest[artifact.key] = artifact
    for key in sorted(newest):
        first = str(newest[key].data or "").strip().splitlines()
        print(f"  {key:<22} {newest[key].type:<9} {first[0][:70] if first else ''}")
    where = os.environ.get("PREFECT_API_URL")
    if where:
        print(f"they are in the Prefect server at {where} (UI: Artifacts)")
    else:
        print(f"they are in Prefect's database under PREFECT_HOME={prefect_home}; to browse "
              f"them: PREFECT_HOME={prefect_home} prefect server start, then open "
              "http://127.0.0.1:4200/artifacts")


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
    # The flows' runs and artifacts go to a Prefect database of the demo's own, unless a
    # server is configured; the CLI below finds no server and runs without Prefect.
    prefect_home = work / "prefect"
    if not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_HOME"] = str(prefect_home)
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
            flow_args = {"instance": "main", "config_path": str(config)}
            step("00:00 full backup: the backup_full flow, as its deployment runs it "
                 "(the seed's schedule, in compressed time; Prefect starts once, here)")
            run_flow("backup_full", **flow_args)
            step("workload, WAL shipped every '15 minutes' (the ship_logs flow)")
            insert_orders(conn, 20)
            run_flow("ship_logs", **flow_args)
            step("06:00 incremental backup (the backup_incremental flow)")
            run_flow("backup_incremental", **flow_args)
            before = insert_orders(conn, 20)
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            target: datetime = row[0]
            print(f"target time: {target.isoformat()} (after order {before[-1]})")
            time.sleep(0.2)
            insert_orders(conn, 10)
            step("the same work from a terminal: `pitr` finds no Prefect server configured "
                 "and runs the same steps directly")
            pitr(config, "ship", "main")
            step("12:00 incremental backup, from the terminal too")
            pitr(config, "backup", "incremental", "main")
            step("a bad change: DELETE a third of the orders, then more workload")
            conn.execute("DELETE FROM orders WHERE id % 3 = 0")
            insert_orders(conn, 10)
            run_flow("ship_logs", **flow_args)
        step("restore to the target time, between the two incrementals: the plan as the "
             "restore_to_point flow's dry run (its restore-plan artifact), then the restore "
             "from the terminal")
        pgdata = work / "restored"
        run_flow("restore_to_point", target_time=target, pgdata=str(pgdata), dry_run=True,
                 **flow_args)
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
        step("nightly recovery drill (the recovery_drill flow): a random point, pg_amcheck, "
             "pg_dump, Great Expectations")
        drill = run_flow("recovery_drill", to="random", **flow_args)
        print(drill["summary"])
        step("re-read every backup and the WAL it needs, then what the repository holds")
        pitr(config, "verify", "main")
        pitr(config, "info", "main")
        step("the artifacts the flow runs published")
        show_artifacts(prefect_home)
        step("what a failing drill looks like: a team suite the data cannot meet")
        impossible = work / "checks" / "main" / "public.orders.json"
        impossible.write_text(IMPOSSIBLE_SUITE)
        failing = subprocess.run([sys.executable, "-m", "pitrflow.cli", "--config", str(config),
                                  "drill", "main", "--to", "latest"], check=False)
        if failing.returncode == 0:
            print("MISMATCH: the impossible expectation passed")
            return 1
        print(f"\nthe failing drill exited with status {failing.returncode}; its drill record "
              "and evidence are kept in the repository (see the error line above)")
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
