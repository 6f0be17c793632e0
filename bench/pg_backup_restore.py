"""Backup and restore benchmark: pitrflow against pg_basebackup and pgBackRest, side by side.

Run by hand, as root, with the project's virtualenv (PostgreSQL refuses root, so every
server here runs as the system user ``pitrflow``; pgBackRest runs as that user too):

    apt-get install -y pgbackrest            # Debian's 2.45: PostgreSQL up to 15
    /work/venv/bin/python bench/pg_backup_restore.py                  # ~2.5 GB database
    /work/venv/bin/python bench/pg_backup_restore.py --scale-gb 0.2   # a quick smoke run
    /work/venv/bin/python bench/pg_backup_restore.py --keep           # keep data, repos, logs
    /work/venv/bin/python bench/pg_backup_restore.py --encryption-only --scale-gb 0.5

What one run does, on the system PostgreSQL 15 (/usr/lib/postgresql/15/bin), in
/var/tmp/pitrflow-bench (``--work-dir``), with fsync on:

1. Builds a database of about ``--scale-gb`` GB: half pgbench tables (``pgbench -i -s N``),
   half a table of rows mixing random bytea (``gen_random_bytes``, incompressible), jsonb
   built from md5 hex strings, and repetitive text, so the data does not compress 20:1 the
   way pgbench data alone does.  Prints the database size.
2. Times full backups, each with a fast checkpoint and zstd level 3 on 2 workers:
   plain ``pg_basebackup --format=tar --compress=server-zstd:level=3,workers=2 -X stream``
   to a directory; pitrflow's core call ``take_backup`` (compress = "server"), with its
   phases; ``pitr backup full main`` through the CLI (a Prefect flow run: the difference
   with the core call is Prefect's start-up); ``pgbackrest backup --type=full``
   (compress-type=zst, compress-level=3, process-max=2, archiving through archive-push).
   Sizes are what each repository holds for that backup; for pgBackRest also with the
   archived WAL the backup needs (pitrflow's backup carries that WAL inside it).
3. Ships WAL (``pitr ship main``) so ``latest`` has a mark, then times restores to a
   promoted, running server on its own port: ``pitr restore main --to latest`` (CLI),
   the core planner + executor, and ``pgbackrest restore --type=immediate
   --target-action=promote`` followed by ``pg_ctl start`` and waiting for
   ``pg_is_in_recovery()`` to turn false.  Each restored server is checked (row counts
   against the source) and stopped.  Restores run ``--restore-rounds`` times each (3),
   each round starting with a different tool, and the median is reported; every timed
   step starts after ``sync`` and a short pause, so no step pays for the previous one's
   writeback (measured: that alone moved pitr's CLI fetch between 3 and 10 s).
4. The encryption case (bench/_encryption.py): the same database backed up and restored by
   the core calls into an unencrypted and an encrypted repository, against the target
   "encryption adds at most 10 % to backup and restore time".  ``--encryption-only`` runs
   just this (and needs no pgBackRest).
5. Prints a table of times, sizes and ratios pitr/pgBackRest against the targets
   (backup time <= 0.7x, size <= 1.05x, restore time <= 0.8x), plus where pitr's time goes,
   and writes the same as JSON to bench/results-<date>.json.  It also watches /proc for CPU
   used by processes that are not its own during each timed step (another test suite, say)
   and prints a WARNING naming the disturbed steps, since such figures are not comparable.

Every server it starts is stopped on the way out, whatever happens.  Without ``--keep`` the
work directory is removed at the end; it is always wiped at the start of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    RUN_AS,
    T0,
    BenchError,
    Interference,
    PhaseClock,
    as_server_user,
    build_database,
    chown_to_server_user,
    free_port,
    interference_lines,
    is_root,
    ratio,
    row_counts,
    run,
    say,
    tree_bytes,
    verdict,
    warm_page_cache,
)
from _encryption import encryption_case, encryption_lines

PG_BIN = Path("/usr/lib/postgresql/15/bin")
STANZA = "bench"
INSTANCE = "main"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PG_TOOLS = ("initdb", "pg_ctl", "postgres", "pgbench", "pg_basebackup", "pg_receivewal",
            "psql", "pg_isready", "pg_config")
TARGETS = {"backup_time": 0.7, "size": 1.05, "restore_time": 0.8}

# --------------------------------------------------------------------------- processes

MONITOR: Interference | None = None


def settle() -> None:
    """Flush what earlier steps wrote: their writeback must not be billed to the next step.

    Measured: a restore started while the previous step's 2.6 GB were still being
    written back ran its tar at 5 s of CPU instead of 1 s, and a restore that followed
    an rmtree of another restored directory looked twice as fast as the same restore
    run first.
    """
    os.sync()
    time.sleep(2)


def timed(name: str, func: Callable[[], Any]) -> tuple[float, Any]:
    settle()
    guard = MONITOR.step(name) if MONITOR is not None else contextlib.nullcontext()
    with guard:
        started = time.monotonic()
        value = func()
        return time.monotonic() - started, value


# --------------------------------------------------------------------------- checks

def check_prerequisites(work: Path, scale_gb: float, pgbackrest: bool = True,
                        ) -> dict[str, str]:
    """Refuse to start, with one clear message, when something needed is missing."""
    problems: list[str] = []
    for tool in PG_TOOLS:
        if not (PG_BIN / tool).exists():
            problems.append(f"{PG_BIN / tool} is missing (apt-get install -y postgresql-15)")
    if pgbackrest and shutil.which("pgbackrest") is None:
        problems.append("pgbackrest is not on PATH (apt-get install -y pgbackrest)")
    if shutil.which("tar") is None:
        problems.append("tar is not on PATH")
    if is_root():
        if shutil.which("runuser") is None:
            problems.append("runuser is not on PATH (util-linux)")
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            pass  # LocalCluster creates the user
    if (PG_BIN / "pg_config").exists():
        share = subprocess.run([str(PG_BIN / "pg_config"), "--sharedir"], capture_output=True,
                               text=True, check=False).stdout.strip()
        if not (Path(share) / "extension" / "pgcrypto.control").exists():
            problems.append(f"the pgcrypto extension is missing from {share}/extension "
                            "(postgresql-contrib for 15)")
    try:
        import prefect  # noqa: F401

        import pitrflow.cli  # noqa: F401
    except ImportError as exc:
        problems.append(f"cannot import {exc.name}: run this with the project's virtualenv "
                        "(/work/venv/bin/python bench/pg_backup_restore.py)")
    anchor = work if work.exists() else work.parent
    while not anchor.exists():
        anchor = anchor.parent
    need = scale_gb * 1e9 * 6 + 2e9  # source + WAL, three backups, restored copies
    free = shutil.disk_usage(anchor).free
    if free < need:
        problems.append(f"{anchor} has {free / 1e9:.1f} GB free; this run needs about "
                        f"{need / 1e9:.1f} GB (lower --scale-gb or choose --work-dir)")
    if problems:
        raise BenchError("cannot run the benchmark:\n  - " + "\n  - ".join(problems))
    versions = {
        "postgresql": run([str(PG_BIN / "postgres"), "--version"], what="postgres").stdout}
    if pgbackrest:
        versions["pgbackrest"] = run(["pgbackrest", "version"], what="pgbackrest").stdout
    from pitrflow import __version__

    versions["pitrflow"] = __version__
    return {k: v.strip() for k, v in versions.items()}


# --------------------------------------------------------------------------- servers

class Servers:
    """Every data directory a server was started in, so all are stopped on the way out."""

    def __init__(self) -> None:
        self.data_dirs: list[Path] = []

    def started(self, data_dir: Path) -> None:
        if data_dir not in self.data_dirs:
            self.data_dirs.append(data_dir)

    def stop(self, data_dir: Path, mode: str = "fast") -> None:
        if (data_dir / "postmaster.pid").exists():
            run(as_server_user([str(PG_BIN / "pg_ctl"), "stop", "-D", str(data_dir), "-m",
                                mode, "-w", "-t", "120"]), what="pg_ctl stop", check=False)

    def stop_all(self) -> None:
        for data_dir in reversed(self.data_dirs):
            try:
                self.stop(data_dir, "fast")
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"warning: could not stop the server in {data_dir}: {exc}",
                      file=sys.stderr)


def stop_leftovers(work: Path) -> None:
    """Servers a previous, killed run left behind in the work directory."""
    if not work.exists():
        return
    for pid_file in work.glob("*/postmaster.pid"):
        run(as_server_user([str(PG_BIN / "pg_ctl"), "stop", "-D", str(pid_file.parent),
                            "-m", "immediate", "-w", "-t", "60"]), what="pg_ctl stop",
            check=False)


def wait_promoted(host: str, port: int, timeout: float = 3600) -> None:
    """Until the server answers and pg_is_in_recovery() is false."""
    deadline = time.monotonic() + timeout
    isready = [str(PG_BIN / "pg_isready"), "-q", "-h", host, "-p", str(port)]
    query = [str(PG_BIN / "psql"), "-X", "-At", "-h", host, "-p", str(port), "-U", "postgres",
             "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"]
    while time.monotonic() < deadline:
        if subprocess.run(isready, check=False).returncode == 0:
            out = subprocess.run(query, capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip() == "f":
                return
        time.sleep(0.1)
    raise BenchError(f"the server on port {port} was not promoted within {timeout:.0f} s")


# --------------------------------------------------------------------------- pgBackRest

def pgbackrest_conf(work: Path, data_dir: Path, port: int) -> Path:
    for name in ("pgbr-repo", "pgbr-log", "pgbr-lock", "pgbr-spool"):
        (work / name).mkdir(exist_ok=True)
        chown_to_server_user(work / name)
    conf = work / "pgbackrest.conf"
    conf.write_text(f"""[global]
repo1-path={work / 'pgbr-repo'}
repo1-retention-full=10
log-path={work / 'pgbr-log'}
lock-path={work / 'pgbr-lock'}
spool-path={work / 'pgbr-spool'}
compress-type=zst
compress-level=3
process-max=2
start-fast=y
log-level-console=warn
log-level-file=detail

[{STANZA}]
pg1-path={data_dir}
pg1-port={port}
pg1-socket-path={data_dir}
pg1-user=postgres
""")
    conf.chmod(0o644)
    return conf


def pgbackrest(conf: Path, *args: str, what: str) -> subprocess.CompletedProcess[str]:
    return run(as_server_user(["pgbackrest", f"--config={conf}", f"--stanza={STANZA}", *args]),
               what=what, cwd=conf.parent)


def pgbackrest_backup_sizes(conf: Path, work: Path) -> dict[str, Any]:
    info = json.loads(pgbackrest(conf, "--output=json", "info", what="pgbackrest info").stdout)
    backup = info[0]["backup"][-1]
    start, stop = backup["archive"]["start"], backup["archive"]["stop"]
    wal_bytes, wal_files = 0, 0
    for path in (work / "pgbr-repo" / "archive" / STANZA).rglob("*"):
        name = path.name
        if path.is_file() and len(name) > 24 and start <= name[:24] <= stop:
            wal_bytes += path.stat().st_size
            wal_files += 1
    backup_dir = work / "pgbr-repo" / "backup" / STANZA / backup["label"]
    return {"label": backup["label"], "repo_bytes": int(backup["info"]["repository"]["size"]),
            "dir_bytes": tree_bytes(backup_dir), "wal_bytes": wal_bytes, "wal_files": wal_files,
            "wal_range": [start, stop], "database_bytes": int(backup["info"]["size"])}


# --------------------------------------------------------------------------- pitr

def write_pitr_config(work: Path, port: int) -> Path:
    config = work / "pitrflow.toml"
    config.write_text(f"""[repository]
path = "{work / 'pitr-repo'}"

[instances.{INSTANCE}]
engine = "postgresql"
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "postgres"
bin_dir = "{PG_BIN}"
compress = "server"
compress_level = 3
compress_workers = 2
""")
    config.chmod(0o644)
    return config


def pitr_cli(config: Path, *args: str, prefect_home: Path, what: str,
             ) -> subprocess.CompletedProcess[str]:
    env = {"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PITR_CONFIG": str(config)}
    return run([sys.executable, "-m", "pitrflow.cli", "--config", str(config), *args],
               what=what, env=env, cwd=REPO_ROOT)


def pitr_core_backup(config_path: Path) -> tuple[float, dict[str, Any]]:
    from pitrflow import procs
    from pitrflow.config import load_config
    from pitrflow.engines.postgres import sql
    from pitrflow.engines.postgres.backup import basebackup
    from pitrflow.storage import fs, open_repository

    config = load_config(config_path)
    instance = config.instance(INSTANCE)
    repo = open_repository(config.repository)
    clock = PhaseClock()
    clock.wrap(sql, "server_facts", "connect + server facts")
    clock.wrap(basebackup, "ensure_slot", "replication slot")
    clock.wrap(basebackup, "read_catalog", "read catalog")
    clock.wrap(basebackup, "find_binaries", "find binaries")
    clock.wrap(procs, "run", lambda *a, **kw: str(kw.get("what") or Path(a[0][0]).name))
    clock.wrap(basebackup, "read_pg_manifest", "parse backup_manifest")
    clock.wrap(fs, "sha256_file", "sha256 of the tars")
    clock.wrap(fs.FsRepository, "put_file", "put_file (sha256 + fsync + rename)")
    clock.wrap(fs.FsRepository, "put_bytes", "write manifest.json")
    with clock.active():
        seconds, outcome = timed("backup pitr core",
                                 lambda: basebackup.take_backup(instance, repo))
    phases = dict(clock.totals)
    put = phases.pop("put_file (sha256 + fsync + rename)", 0.0)
    phases["fsync + rename into repository"] = put - phases.get("sha256 of the tars", 0.0)
    phases["other"] = seconds - sum(phases.values())
    manifest = outcome.manifest
    return seconds, {"id": manifest.id, "repo_bytes": manifest.size_bytes,
                     "files": {f.name: f.size for f in manifest.files},
                     "compression": manifest.compression,
                     "phases": {k: round(v, 2) for k, v in phases.items()}}


def pitr_core_restore(config_path: Path, pgdata: Path, port: int) -> tuple[float, dict[str, Any]]:
    from pitrflow.config import load_config
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog
    from pitrflow.engines.postgres.restore import executor
    from pitrflow.engines.postgres.restore.planner import RestoreTarget, plan_restore
    from pitrflow.storage import open_repository

    clock = PhaseClock()
    clock.wrap(executor, "preflight", "preflight")
    clock.wrap(executor, "_restore_command", "choose restore_command")
    clock.wrap(executor, "write_recovery_config", "write recovery config")
    clock.wrap(executor, "chown_tree", "chown")

    def restore() -> Any:
        config = load_config(config_path)
        repo = open_repository(config.repository)
        plan = plan_restore(read_catalog(repo, INSTANCE), RestoreTarget(None))
        request = executor.RestoreRequest(config.instance(INSTANCE), pgdata, port,
                                          config_file=config.source)
        return executor.execute_restore(plan, request, repo)

    with clock.active():
        seconds, outcome = timed("restore pitr core", restore)
    phases = {**outcome.phases, **clock.totals}
    # preflight runs once more inside execute_restore; both calls are in its total.
    phases["other"] = seconds - sum(phases.values())
    plan = outcome.plan
    return seconds, {"backup": plan.backup.id, "wal_segments": len(plan.wal),
                     "wal_bytes": plan.wal_bytes, "restore_command": outcome.restore_command_kind,
                     "phases": {k: round(v, 2) for k, v in phases.items()}}


def parse_phases(text: str) -> dict[str, float]:
    match = re.search(r"phases: (.*)$", text, re.M)
    if not match:
        return {}
    return {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+) s", match.group(1))}


def zstd_floor(path: Path) -> float:
    """Seconds to only decompress one .zst object, single-threaded, to nowhere."""
    import zstandard

    started = time.monotonic()
    with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        while reader.read(1 << 20):
            pass
    return time.monotonic() - started


# --------------------------------------------------------------------------- report

def report(results: dict[str, Any]) -> str:
    mb = 1e6
    b, r = results["backups"], results["restores"]
    db = results["database"]
    lines = [
        "",
        f"pitrflow vs pgBackRest on PostgreSQL 15 -- database {db['database_bytes'] / 1e9:.2f} GB "
        f"(pgbench scale {db['pgbench_scale']} + {db['row_counts']['bench_docs']:,} mixed rows)",
        "",
        f"{'operation':<44}{'time s':>9}{'size MB':>11}",
        "-" * 64,
    ]

    def row(name: str, seconds: float | None, size: float | None = None) -> None:
        t = f"{seconds:9.1f}" if seconds is not None else f"{'-':>9}"
        s = f"{size / mb:11.1f}" if size is not None else f"{'-':>11}"
        lines.append(f"{name:<44}{t}{s}")

    row("backup  pg_basebackup server-zstd:3,workers=2", b["pg_basebackup"]["seconds"],
        b["pg_basebackup"]["repo_bytes"])
    row("backup  pitr core (take_backup)", b["pitr_core"]["seconds"], b["pitr_core"]["repo_bytes"])
    row("backup  pitr backup full (CLI, Prefect flow)", b["pitr_cli"]["seconds"],
        b["pitr_cli"]["repo_bytes"])
    pb = b["pgbackrest"]
    row("backup  pgbackrest --type=full", pb["seconds"], pb["repo_bytes"])
    row("          + archived WAL it needs", None, pb["repo_bytes"] + pb["wal_bytes"])
    row("ship    pitr ship (CLI, after the backups)", results["ship_seconds"])
    row("restore pitr core (planner + executor)", r["pitr_core"]["seconds"])
    row("restore pitr restore --to latest (CLI)", r["pitr_cli"]["seconds"])
    row("restore pgbackrest --type=immediate + start", r["pgbackrest"]["seconds"])
    lines += ["", f"{'ratio pitr / pgBackRest':<44}{'value':>9}{'target':>11}{'':>6}",
              "-" * 70]
    for key, name, target in results["ratio_rows"]:
        value = results["ratios"][key]
        shown = f"{value:9.2f}" if value is not None else f"{'-':>9}"
        lines.append(f"{name:<44}{shown}{'<= ' + format(target, '.2f'):>11}"
                     f"{verdict(value, target):>6}")
    lines += ["", "where pitr's time goes (seconds)"]
    lines.append("  backup (core):  " + ", ".join(
        f"{k} {v:.1f}" for k, v in b["pitr_core"]["phases"].items()))
    lines.append(f"  backup (CLI):   Prefect flow overhead "
                 f"{b['pitr_cli']['seconds'] - b['pitr_core']['seconds']:.1f} over the core call")
    lines.append("  restore (core): " + ", ".join(
        f"{k} {v:.1f}" for k, v in r["pitr_core"]["phases"].items()))
    lines.append("  restore (CLI):  " + ", ".join(
        f"{k} {v:.1f}" for k, v in r["pitr_cli"]["phases"].items())
        + f"; outside those phases {r['pitr_cli']['outside_phases']:.1f} (Prefect, plan, "
        "preflight)")
    lines.append(f"  restore WAL: {r['pitr_core']['wal_segments']} segments "
                 f"({r['pitr_core']['wal_bytes'] / mb:.1f} MB stored); restore_command: "
                 f"{r['pitr_core']['restore_command']}")
    lines.append(f"  floor: zstd decompression alone of base.tar.zst, one thread: "
                 f"{results['diagnostics']['zstd_decompress_seconds']:.1f} s")
    pr = r["pgbackrest"]
    lines.append(f"  pgBackRest restore: restore command {pr['restore_seconds']:.1f}, "
                 f"start + promotion {pr['start_seconds']:.1f}")
    lines.append("  pitr backup objects: " + ", ".join(
        f"{k} {v / mb:.1f} MB" for k, v in b["pitr_core"]["files"].items()))
    if "encryption" in results:
        lines += encryption_lines(results["encryption"])
    lines += interference_lines(results.get("interference", {}))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-gb", type=float, default=2.5,
                        help="database size to build, in GB (default 2.5)")
    parser.add_argument("--restore-rounds", type=int, default=3,
                        help="restores of each kind, in rotating order; the median is "
                             "reported (default %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (data, repositories, logs) afterwards")
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp/pitrflow-bench"),
                        help="where clusters and repositories live (default %(default)s)")
    parser.add_argument("--encryption-only", action="store_true",
                        help="only the encryption case: pitr core backup and restore, "
                             "unencrypted against encrypted (no pgBackRest needed)")
    args = parser.parse_args()
    work: Path = args.work_dir.absolute()
    try:
        versions = check_prerequisites(work, args.scale_gb, pgbackrest=not args.encryption_only)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop_leftovers(work)
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
        run_it = encryption_only if args.encryption_only else benchmark
        results = run_it(work, args.scale_gb, servers, versions, args.restore_rounds)
        results["interference"] = MONITOR.summary()
        failed = False
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"see {work / 'bench.log'}", file=sys.stderr)
        return 1
    finally:
        MONITOR.stop()
        servers.stop_all()
        if not args.keep and not failed:
            shutil.rmtree(work, ignore_errors=True)
        elif failed:
            print(f"work directory kept for inspection: {work}", file=sys.stderr)
    print(report(results) if not args.encryption_only else "\n".join(
        encryption_lines(results["encryption"]) + interference_lines(results["interference"])))
    now = datetime.now(UTC)
    out = BENCH_DIR / f"results-{'encryption-' if args.encryption_only else ''}" \
                      f"{now.strftime('%Y-%m-%d')}.json"
    if out.exists():  # never overwrite an earlier run of the same day
        out = out.with_name(f"{out.stem}-{now.strftime('%H%M%S')}.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}; whole run {time.monotonic() - T0:.0f} s")
    return 0


def benchmark(work: Path, scale_gb: float, servers: Servers,
              versions: dict[str, str], rounds: int = 3) -> dict[str, Any]:
    from pitrflow.devtools.localpg import LocalCluster, world_traversable

    ports: set[int] = set()
    world_traversable(work)
    source_dir = work / "source"
    port = free_port(55440, ports)
    conf = work / "pgbackrest.conf"
    archive_cmd = f"pgbackrest --config={conf} --stanza={STANZA} archive-push %p"
    cluster = LocalCluster(source_dir, port, PG_BIN, run_as=RUN_AS, settings={
        "fsync": "on",
        "archive_mode": "on",
        "archive_command": "'/bin/true'",  # pgBackRest's goes in once the data is loaded
        "shared_buffers": "256MB",
        "max_wal_size": "2GB",
    })
    say(f"initdb + start PostgreSQL 15 in {source_dir} on port {port} as {RUN_AS}")
    cluster.init()
    servers.started(source_dir)
    cluster.start()
    database = build_database(cluster, scale_gb, PG_BIN)

    pgbackrest_conf(work, source_dir, port)
    with cluster.connect() as conn:
        conn.execute(f"ALTER SYSTEM SET archive_command = '{archive_cmd}'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)
    say("pgbackrest stanza-create + check")
    pgbackrest(conf, "stanza-create", what="pgbackrest stanza-create")
    pgbackrest(conf, "check", what="pgbackrest check")
    config = write_pitr_config(work, port)
    prefect_home = work / "prefect-home"

    say("reading the data directory once so every backup starts from a warm cache")
    warm_page_cache(source_dir)
    backups: dict[str, Any] = {}

    out_dir = work / "basebackup"
    argv = [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-D", str(out_dir), "--format=tar", "--compress=server-zstd:level=3,workers=2",
            "-X", "stream", "--checkpoint=fast"]
    seconds, _ = timed("backup pg_basebackup", lambda: run(argv, what="pg_basebackup"))
    backups["pg_basebackup"] = {"seconds": round(seconds, 2), "repo_bytes": tree_bytes(out_dir),
                                "argv": argv[1:]}
    say(f"pg_basebackup: {seconds:.1f} s, {tree_bytes(out_dir) / 1e6:.1f} MB")
    shutil.rmtree(out_dir)

    seconds, core = pitr_core_backup(config)
    backups["pitr_core"] = {"seconds": round(seconds, 2), **core}
    say(f"pitr core take_backup: {seconds:.1f} s, {core['repo_bytes'] / 1e6:.1f} MB")

    # A first Prefect run in a fresh PREFECT_HOME sets up its database: do that here,
    # with a ship run, so the timed CLI backup pays only the usual start-up.
    say("pitr ship (warms up Prefect's home)")
    pitr_cli(config, "ship", INSTANCE, prefect_home=prefect_home, what="pitr ship")

    seconds, result = timed("backup pitr CLI", lambda: pitr_cli(
        config, "backup", "full", INSTANCE, prefect_home=prefect_home, what="pitr backup"))
    match = re.search(r"backup (\S+) \(full\) of \S+ complete: (\d+) bytes", result.stdout)
    if not match:
        raise BenchError(f"unexpected output from pitr backup full:\n{result.stdout[-2000:]}")
    backups["pitr_cli"] = {"seconds": round(seconds, 2), "id": match.group(1),
                           "repo_bytes": int(match.group(2))}
    say(f"pitr backup full (CLI): {seconds:.1f} s, {int(match.group(2)) / 1e6:.1f} MB")

    seconds, _ = timed("backup pgbackrest", lambda: pgbackrest(
        conf, "--type=full", "backup", what="pgbackrest backup"))
    backups["pgbackrest"] = {"seconds": round(seconds, 2), **pgbackrest_backup_sizes(conf, work)}
    say(f"pgbackrest backup: {seconds:.1f} s, {backups['pgbackrest']['repo_bytes'] / 1e6:.1f} MB"
        f" (+ {backups['pgbackrest']['wal_bytes'] / 1e6:.1f} MB archived WAL)")

    say("pitr ship, so that latest has a mark after every backup")
    ship_seconds, _ = timed("ship pitr CLI", lambda: pitr_cli(
        config, "ship", INSTANCE, prefect_home=prefect_home, what="pitr ship"))
    source_counts = database["row_counts"]
    tar = work / "pitr-repo" / INSTANCE / "backups" / backups["pitr_cli"]["id"] / "base.tar.zst"
    diagnostics = {"zstd_decompress_seconds": round(zstd_floor(tar), 2) if tar.exists() else 0.0}

    restores: dict[str, Any] = {}
    checks: dict[str, bool] = {}

    def restore_pitr_cli(pgdata: Path, rport: int) -> tuple[float, dict[str, Any]]:
        seconds, result = timed("restore pitr CLI", lambda: pitr_cli(
            config, "restore", INSTANCE, "--to", "latest", "--pgdata", str(pgdata), "--port",
            str(rport), prefect_home=prefect_home, what="pitr restore"))
        phases = parse_phases(result.stdout)
        return seconds, {"phases": phases,
                         "outside_phases": round(seconds - sum(phases.values()), 2)}

    def restore_pitr_core(pgdata: Path, rport: int) -> tuple[float, dict[str, Any]]:
        return pitr_core_restore(config, pgdata, rport)

    def restore_pgbackrest(pgdata: Path, rport: int) -> tuple[float, dict[str, Any]]:
        pgdata.mkdir(mode=0o700)
        chown_to_server_user(pgdata)
        start_argv = as_server_user([
            str(PG_BIN / "pg_ctl"), "start", "-D", str(pgdata), "-l",
            str(pgdata / "restore.log"), "-w", "-t", "3600", "-o",
            f"-p {rport} -k {pgdata} -c archive_mode=off"])
        settle()
        guard = MONITOR.step("restore pgbackrest") if MONITOR else contextlib.nullcontext()
        with guard:
            started = time.monotonic()
            pgbackrest(conf, f"--pg1-path={pgdata}", "--type=immediate",
                       "--target-action=promote", "restore", what="pgbackrest restore")
            restore_seconds = time.monotonic() - started
            run(start_argv, what="pg_ctl start")
            wait_promoted("127.0.0.1", rport)
            seconds = time.monotonic() - started
        return seconds, {"restore_seconds": round(restore_seconds, 2),
                         "start_seconds": round(seconds - restore_seconds, 2)}

    kinds: dict[str, Callable[[Path, int], tuple[float, dict[str, Any]]]] = {
        "pitr_cli": restore_pitr_cli, "pitr_core": restore_pitr_core,
        "pgbackrest": restore_pgbackrest}
    runs: dict[str, list[tuple[float, dict[str, Any]]]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for round_no in range(rounds):
        # Each round starts with a different tool, so none is always the one that meets
        # the page cache and writeback the previous steps left behind.
        for kind in order[round_no % 3:] + order[:round_no % 3]:
            pgdata = work / f"restore-{kind.replace('_', '-')}"
            rport = free_port(port + 1, ports)
            servers.started(pgdata)
            seconds, details = kinds[kind](pgdata, rport)
            ok = row_counts(rport) == source_counts
            checks[kind] = checks.get(kind, True) and ok
            runs[kind].append((seconds, details))
            say(f"{kind} restore, round {round_no + 1}/{rounds}: {seconds:.1f} s, "
                f"rows match: {ok}")
            servers.stop(pgdata)
            shutil.rmtree(pgdata, ignore_errors=True)
    for kind, results in runs.items():
        ordered = sorted(results, key=lambda item: item[0])
        seconds, details = ordered[len(ordered) // 2]  # the median run, with its phases
        restores[kind] = {"seconds": round(seconds, 2), **details,
                          "all_seconds": [round(item[0], 2) for item in results]}

    pb = backups["pgbackrest"]
    pgbr_size = pb["repo_bytes"] + pb["wal_bytes"]
    ratio_rows = [
        ("backup_time_core", "backup time, core call", TARGETS["backup_time"]),
        ("backup_time_cli", "backup time, CLI", TARGETS["backup_time"]),
        ("size", "size (pgBackRest backup + its WAL)", TARGETS["size"]),
        ("size_backup_only", "size (pgBackRest backup alone)", TARGETS["size"]),
        ("restore_time_core", "restore time, core call", TARGETS["restore_time"]),
        ("restore_time_cli", "restore time, CLI", TARGETS["restore_time"]),
    ]
    ratios = {
        "backup_time_core": ratio(backups["pitr_core"]["seconds"], pb["seconds"]),
        "backup_time_cli": ratio(backups["pitr_cli"]["seconds"], pb["seconds"]),
        "size": ratio(backups["pitr_cli"]["repo_bytes"], pgbr_size),
        "size_backup_only": ratio(backups["pitr_cli"]["repo_bytes"], pb["repo_bytes"]),
        "restore_time_core": ratio(restores["pitr_core"]["seconds"],
                                   restores["pgbackrest"]["seconds"]),
        "restore_time_cli": ratio(restores["pitr_cli"]["seconds"],
                                  restores["pgbackrest"]["seconds"]),
    }
    if not all(checks.values()):
        raise BenchError(f"a restored server's row counts differ from the source: {checks}")
    encryption = run_encryption_case(work, port, ports, servers, source_counts, rounds)
    return {
        "encryption": encryption,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "work_dir": str(work)},
        "versions": versions,
        "scale_gb": scale_gb,
        "database": database,
        "backups": backups,
        "ship_seconds": round(ship_seconds, 2),
        "restores": restores,
        "restored_rows_match": checks,
        "diagnostics": diagnostics,
        "targets": TARGETS,
        "ratio_rows": ratio_rows,
        "ratios": {k: (round(v, 3) if v is not None else None) for k, v in ratios.items()},
        "met": {key: ratios[key] is not None and ratios[key] <= target
                for key, _name, target in ratio_rows},
    }


def run_encryption_case(work: Path, port: int, ports: set[int], servers: Servers,
                        source_counts: dict[str, int], rounds: int) -> dict[str, Any]:
    def started_port() -> int:
        return free_port(port + 1, ports)

    def stop(pgdata: Path) -> None:
        servers.started(pgdata)
        servers.stop(pgdata)

    return encryption_case(work, port, PG_BIN, source_counts, timed, started_port, stop, rounds)


def encryption_only(work: Path, scale_gb: float, servers: Servers, versions: dict[str, str],
                    rounds: int = 3) -> dict[str, Any]:
    """Just the encryption case, on a database built as for the whole benchmark."""
    from pitrflow.devtools.localpg import LocalCluster, world_traversable

    ports: set[int] = set()
    world_traversable(work)
    # Away from the whole benchmark's ports, which another run on the host may hold.
    port = free_port(57000 + os.getpid() % 500 * 4, ports)
    cluster = LocalCluster(work / "source", port, PG_BIN, run_as=RUN_AS, settings={
        "fsync": "on", "shared_buffers": "256MB", "max_wal_size": "2GB"})
    say(f"initdb + start PostgreSQL 15 in {work / 'source'} on port {port} as {RUN_AS}")
    cluster.init()
    servers.started(work / "source")
    cluster.start()
    database = build_database(cluster, scale_gb, PG_BIN)
    warm_page_cache(work / "source")
    encryption = run_encryption_case(work, port, ports, servers, database["row_counts"], rounds)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {"cpus": os.cpu_count(), "work_dir": str(work)}, "versions": versions,
            "scale_gb": scale_gb, "database": database, "encryption": encryption}


if __name__ == "__main__":
    sys.exit(main())
