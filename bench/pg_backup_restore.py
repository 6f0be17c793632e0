"""Backup and restore benchmark: pitrflow against pgBackRest (and pg_basebackup), side by side.

Run by hand, as root, with the project's virtualenv (PostgreSQL refuses root, so every
server here runs as the system user ``pitrflow``; pgBackRest runs as that user too):

    apt-get install -y pgbackrest            # Debian's 2.45: PostgreSQL up to 15
    .venv/bin/python bench/pg_backup_restore.py                  # ~2.5 GB database
    .venv/bin/python bench/pg_backup_restore.py --scale-gb 0.2   # a quick smoke run
    .venv/bin/python bench/pg_backup_restore.py --keep           # keep data, repos, logs
    .venv/bin/python bench/pg_backup_restore.py --encryption-only --scale-gb 0.5

What one run does, on the system PostgreSQL 15 (/usr/lib/postgresql/15/bin), in
/var/tmp/pitrflow-bench (``--work-dir``), with fsync on:

1. Builds a database of about ``--scale-gb`` GB: half pgbench tables (``pgbench -i -s N``),
   half a table of rows mixing random bytea (``gen_random_bytes``, incompressible), jsonb
   built from md5 hex strings, and repetitive text, so the data does not compress 20:1 the
   way pgbench data alone does.  Starts moto's S3 server on a local port.
2. Times full backups, each with a fast checkpoint and zstd level 3: plain
   ``pg_basebackup --compress=server-zstd:level=3,workers=2`` to a directory (a reference);
   pitrflow's core ``take_backup`` (layout v2, the default) with ``process_max`` 1 and 2 to
   the filesystem and with 2 to moto's S3; ``pitr backup full`` through the CLI (a Prefect
   flow run); ``pgbackrest backup --type=full`` (compress-type=zst, level 3) with
   process-max 1 and 2.  Each pitr core call runs in a child process (bench/pitr_child.py),
   so its peak RSS (the whole process tree, from wait4) is its own.  Sizes are what each
   repository holds for the backup; for pgBackRest also with the archived WAL it needs
   (pitrflow's backup carries that WAL inside it).
3. Ships WAL so ``latest`` has a mark, then times restores to a promoted, running server:
   pitr core with process_max 1 and 2 (filesystem) and 2 (S3), ``pitr restore --to
   latest`` (CLI), and ``pgbackrest restore --type=immediate --target-action=promote``
   with process-max 1 and 2, each followed by start-up and promotion.  Every restored
   server's row counts are checked against the source, then it is stopped.  Restores run
   ``--restore-rounds`` times each (3), each round starting with another kind, and the
   median is reported; every timed step starts after ``sync`` and a short pause, so no
   step pays for the previous one's writeback.
4. Delta restore: a restored copy is stopped, about 5 % of the rows change on the source
   (a contiguous 5 % of the pgbench accounts and of the mixed rows), a new pitr backup is
   taken and shipped, and ``execute_restore(delta=True)`` brings the copy up to date; the
   same backup is then restored in full into a new directory; then another 5 % change,
   and a delta restore that trusts mtimes.  Each is checked (counts and sums).
5. Prints times, sizes, peak RSS and the ratios against the targets of issue 14 (restore
   <= 0.8x pgBackRest's at the same worker count; 2 workers >= 1.6x faster than 1 on
   restore; backup <= 0.7x pgBackRest's at <= 1.05x its size; delta <= 0.3x a full
   restore; S3 within 1.3x of the filesystem), with where pitr's time goes, and writes the
   same as JSON to bench/results-<date>.json.  It also watches /proc for CPU used by
   processes that are not its own during each timed step and prints a WARNING naming the
   disturbed steps, since such figures are not comparable.

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

from _bench_report import report, summarize
from _bench_stores import (
    AWS_ENV,
    BUCKET,
    STANZA,
    content_check,
    decompress_floor,
    pgbackrest,
    pgbackrest_backup_sizes,
    pgbackrest_conf,
    process_cpu_seconds,
    start_moto,
    write_floor,
)
from _common import (
    RUN_AS,
    T0,
    BenchError,
    Interference,
    as_server_user,
    build_database,
    chown_to_server_user,
    free_port,
    is_root,
    row_counts,
    run,
    say,
    tree_bytes,
    warm_page_cache,
)
from _encryption import encryption_case, encryption_lines

PG_BIN = Path("/usr/lib/postgresql/15/bin")
INSTANCE = "main"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PG_TOOLS = ("initdb", "pg_ctl", "postgres", "pgbench", "pg_basebackup", "pg_receivewal",
            "psql", "pg_isready", "pg_config")

# --------------------------------------------------------------------------- processes

MONITOR: Interference | None = None
MOTO_PID: int | None = None
MOTO_CPU: dict[str, float] = {}  # CPU seconds moto's server used during each timed step


@contextlib.contextmanager
def moto_cpu(name: str) -> Any:
    before = process_cpu_seconds(MOTO_PID) if MOTO_PID is not None else 0.0
    try:
        yield
    finally:
        if MOTO_PID is not None:
            MOTO_CPU[name] = round(MOTO_CPU.get(name, 0.0) + process_cpu_seconds(MOTO_PID)
                                   - before, 2)


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
    with guard, moto_cpu(name):
        started = time.monotonic()
        value = func()
        return time.monotonic() - started, value


# --------------------------------------------------------------------------- checks

def check_prerequisites(work: Path, scale_gb: float) -> dict[str, str]:
    """Refuse to start, with one clear message, when something needed is missing."""
    problems: list[str] = []
    for tool in PG_TOOLS:
        if not (PG_BIN / tool).exists():
            problems.append(f"{PG_BIN / tool} is missing (apt-get install -y postgresql-15)")
    if shutil.which("pgbackrest") is None:
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
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
        import prefect  # noqa: F401

        import pitrflow.cli  # noqa: F401
    except ImportError as exc:
        problems.append(f"cannot import {exc.name}: run this with the project's virtualenv "
                        "(/work/venv/bin/python bench/pg_backup_restore.py)")
    anchor = work if work.exists() else work.parent
    while not anchor.exists():
        anchor = anchor.parent
    need = scale_gb * 1e9 * 8 + 2e9  # source + WAL, seven backups, two restored copies
    free = shutil.disk_usage(anchor).free
    if free < need:
        problems.append(f"{anchor} has {free / 1e9:.1f} GB free; this run needs about "
                        f"{need / 1e9:.1f} GB (lower --scale-gb or choose --work-dir)")
    if problems:
        raise BenchError("cannot run the benchmark:\n  - " + "\n  - ".join(problems))
    versions = {
        "postgresql": run([str(PG_BIN / "postgres"), "--version"], what="postgres").stdout,
        "pgbackrest": run(["pgbackrest", "version"], what="pgbackrest").stdout,
    }
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


# --------------------------------------------------------------------------- pitr

def write_pitr_config(work: Path, name: str, port: int, process_max: int,
                      repository: str, slot: str) -> Path:
    """One repository, one replication slot: each repository ships its own WAL."""
    config = work / f"pitrflow-{name}.toml"
    config.write_text(f"""[repository]
{repository}
process_max = {process_max}

[instances.{INSTANCE}]
engine = "postgresql"
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "postgres"
bin_dir = "{PG_BIN}"
slot = "{slot}"
compress_level = 3
""")
    config.chmod(0o644)
    return config


def pitr_cli(config: Path, *args: str, prefect_home: Path, what: str,
             ) -> subprocess.CompletedProcess[str]:
    env = {"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PITR_CONFIG": str(config), **AWS_ENV,
           # Measured: on a busy 2-core machine the ephemeral API's first start in a fresh
           # home can take longer than Prefect's default 20 s wait.
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    return run([sys.executable, "-m", "pitrflow.cli", "--config", str(config), *args],
               what=what, env=env, cwd=REPO_ROOT)


def pitr_child(step: str, *args: str) -> dict[str, Any]:
    """Run one core call in bench/pitr_child.py; its JSON plus the tree's peak RSS."""
    argv = [sys.executable, str(BENCH_DIR / "pitr_child.py"), step, *args]
    log.info("$ %s", " ".join(argv))
    with open(LOG_PATH, "ab") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=sink,  # noqa: S603
                                env={**os.environ, **AWS_ENV}, cwd=REPO_ROOT)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise BenchError(f"pitr {step} {' '.join(args)} failed (exit {code}); see {LOG_PATH}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["tree_max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def parse_phases(text: str) -> dict[str, float]:
    match = re.search(r"phases: (.*)$", text, re.M)
    if not match:
        return {}
    return {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+) s", match.group(1))}


# --------------------------------------------------------------------------- main

LOG_PATH = Path("/dev/null")
log = logging.getLogger("bench")


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
                        help="only the encryption case (bench/_encryption.py): pitr core "
                             "backup and restore, unencrypted against encrypted, on the same "
                             "database (no pgBackRest needed)")
    args = parser.parse_args()
    work: Path = args.work_dir.absolute()
    try:
        versions = check_prerequisites(work, args.scale_gb)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop_leftovers(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    global LOG_PATH, MONITOR, MOTO_PID
    LOG_PATH = work / "bench.log"
    handler = logging.FileHandler(LOG_PATH)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("bench", "pitrflow"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).propagate = False
    say(f"work directory {work}; log {LOG_PATH}")
    servers = Servers()
    failed = True
    MONITOR = Interference(work)
    MONITOR.start()
    moto: subprocess.Popen[bytes] | None = None
    try:
        ports: set[int] = set()
        if args.encryption_only:
            results = encryption_only(work, args.scale_gb, servers, versions,
                                      args.restore_rounds, ports)
        else:
            moto, endpoint = start_moto(work, ports)
            MOTO_PID = moto.pid
            results = benchmark(work, args.scale_gb, servers, versions, args.restore_rounds,
                                endpoint, ports)
        results["interference"] = MONITOR.summary()
        failed = False
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"see {LOG_PATH}", file=sys.stderr)
        return 1
    finally:
        MONITOR.stop()
        servers.stop_all()
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=30)
        if not args.keep and not failed:
            shutil.rmtree(work, ignore_errors=True)
        elif failed:
            print(f"work directory kept for inspection: {work}", file=sys.stderr)
    if args.encryption_only:
        print("\n".join(encryption_lines(results["encryption"])))
    else:
        print(report(results))
    now = datetime.now(UTC)
    kind = "encryption-" if args.encryption_only else ""
    out = BENCH_DIR / f"results-{kind}{now.strftime('%Y-%m-%d')}.json"
    if out.exists():  # never overwrite an earlier run of the same day
        out = BENCH_DIR / f"results-{kind}{now.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}; whole run {time.monotonic() - T0:.0f} s")
    return 0


def timed_step(name: str, func: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A child-process step: its own measured seconds, after settling, under the monitor."""
    settle()
    guard = MONITOR.step(name) if MONITOR is not None else contextlib.nullcontext()
    with guard, moto_cpu(name):
        return func()


def benchmark(work: Path, scale_gb: float, servers: Servers, versions: dict[str, str],
              rounds: int, endpoint: str, ports: set[int]) -> dict[str, Any]:
    from pitrflow.devtools.localpg import LocalCluster, world_traversable

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
    fs_repo = f'path = "{work / "pitr-repo"}"'
    s3_repo = (f'url = "s3://{BUCKET}/pitr"\nendpoint_url = "{endpoint}"\n'
               'region = "us-east-1"')
    configs = {"pitr_pm1": write_pitr_config(work, "pm1", port, 1, fs_repo, "pitrflow_bench_fs"),
               "pitr_pm2": write_pitr_config(work, "pm2", port, 2, fs_repo, "pitrflow_bench_fs"),
               "pitr_s3": write_pitr_config(work, "s3", port, 2, s3_repo, "pitrflow_bench_s3")}
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

    for kind in ("pitr_pm1", "pitr_pm2", "pitr_s3"):
        backups[kind] = timed_step(f"backup {kind}",
                                   lambda k=kind: pitr_child("backup", str(configs[k])))
        say(f"{kind} backup: {backups[kind]['seconds']:.1f} s, "
            f"{backups[kind]['repo_bytes'] / 1e6:.1f} MB, peak RSS "
            f"{backups[kind]['tree_max_rss_mb']:.0f} MB")

    # A first Prefect run in a fresh PREFECT_HOME sets up its database: do that here,
    # with a ship run, so the timed CLI backup pays only the usual start-up.
    say("pitr ship (warms up Prefect's home)")
    pitr_cli(configs["pitr_pm2"], "ship", INSTANCE, prefect_home=prefect_home, what="pitr ship")
    seconds, result = timed("backup pitr CLI", lambda: pitr_cli(
        configs["pitr_pm2"], "backup", "full", INSTANCE, prefect_home=prefect_home,
        what="pitr backup"))
    match = re.search(r"backup (\S+) \(full\) of \S+ complete: (\d+) bytes", result.stdout)
    if not match:
        raise BenchError(f"unexpected output from pitr backup full:\n{result.stdout[-2000:]}")
    backups["pitr_cli"] = {"seconds": round(seconds, 2), "id": match.group(1),
                           "repo_bytes": int(match.group(2))}
    say(f"pitr backup full (CLI): {seconds:.1f} s, {int(match.group(2)) / 1e6:.1f} MB")

    for pm in (1, 2):
        seconds, _ = timed(f"backup pgbackrest pm{pm}", lambda pm=pm: pgbackrest(
            conf, f"--process-max={pm}", "--type=full", "backup", what="pgbackrest backup"))
        backups[f"pgbackrest_pm{pm}"] = {"seconds": round(seconds, 2),
                                         **pgbackrest_backup_sizes(conf, work)}
        pb = backups[f"pgbackrest_pm{pm}"]
        say(f"pgbackrest backup, process-max {pm}: {seconds:.1f} s, "
            f"{pb['repo_bytes'] / 1e6:.1f} MB (+ {pb['wal_bytes'] / 1e6:.1f} MB archived WAL)")

    say("pitr ship to both repositories, so that latest has a mark after every backup")
    pitr_cli(configs["pitr_pm2"], "ship", INSTANCE, prefect_home=prefect_home, what="pitr ship")
    pitr_child("ship", str(configs["pitr_s3"]))
    source_counts = database["row_counts"]
    newest = work / "pitr-repo" / INSTANCE / "backups" / backups["pitr_cli"]["id"]
    settle()
    diagnostics = {"decompress_seconds": round(decompress_floor(newest), 2),
                   "write_sync_seconds": round(write_floor(work, database["cluster_bytes"]), 2),
                   "moto_cpu_seconds": {k: v for k, v in MOTO_CPU.items() if v >= 0.05}}

    restores = restore_rounds(work, configs, conf, servers, ports, port, prefect_home,
                              source_counts, rounds)
    delta = delta_round(work, cluster, configs["pitr_pm2"], servers, ports, port)
    return summarize(database, versions, scale_gb, backups, restores, delta, diagnostics, work)


def restore_rounds(work: Path, configs: dict[str, Path], conf: Path, servers: Servers,
                   ports: set[int], port: int, prefect_home: Path,
                   source_counts: dict[str, int], rounds: int) -> dict[str, Any]:
    def pitr_core(kind: str) -> Callable[[Path, int], dict[str, Any]]:
        return lambda pgdata, rport: timed_step(f"restore {kind}", lambda: pitr_child(
            "restore", str(configs[kind]), str(pgdata), str(rport)))

    def cli(pgdata: Path, rport: int) -> dict[str, Any]:
        seconds, result = timed("restore pitr CLI", lambda: pitr_cli(
            configs["pitr_pm2"], "restore", INSTANCE, "--to", "latest", "--pgdata", str(pgdata),
            "--port", str(rport), prefect_home=prefect_home, what="pitr restore"))
        phases = parse_phases(result.stdout)
        return {"seconds": round(seconds, 2), "phases": {
            **phases, "outside phases (Prefect, plan, preflight)": round(
                seconds - sum(v for k, v in phases.items() if k != "wal_fetch"), 2)}}

    def pgbr(pm: int) -> Callable[[Path, int], dict[str, Any]]:
        def restore(pgdata: Path, rport: int) -> dict[str, Any]:
            pgdata.mkdir(mode=0o700)
            chown_to_server_user(pgdata)
            start_argv = as_server_user([
                str(PG_BIN / "pg_ctl"), "start", "-D", str(pgdata), "-l",
                str(pgdata / "restore.log"), "-w", "-t", "3600", "-o",
                f"-p {rport} -k {pgdata} -c archive_mode=off"])
            settle()
            guard = (MONITOR.step(f"restore pgbackrest pm{pm}") if MONITOR
                     else contextlib.nullcontext())
            with guard:
                started = time.monotonic()
                pgbackrest(conf, f"--pg1-path={pgdata}", f"--process-max={pm}",
                           "--type=immediate", "--target-action=promote", "restore",
                           what="pgbackrest restore")
                restore_seconds = time.monotonic() - started
                run(start_argv, what="pg_ctl start")
                wait_promoted("127.0.0.1", rport)
                seconds = time.monotonic() - started
            return {"seconds": round(seconds, 2), "restore_seconds": round(restore_seconds, 2),
                    "start_seconds": round(seconds - restore_seconds, 2)}
        return restore

    kinds: dict[str, Callable[[Path, int], dict[str, Any]]] = {
        "pitr_pm1": pitr_core("pitr_pm1"), "pgbackrest_pm1": pgbr(1),
        "pitr_pm2": pitr_core("pitr_pm2"), "pgbackrest_pm2": pgbr(2),
        "pitr_s3": pitr_core("pitr_s3"), "pitr_cli": cli}
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for round_no in range(rounds):
        # Each round starts with a different kind, so none is always the one that meets
        # the page cache and writeback the previous steps left behind.
        shift = round_no * 2 % len(order)
        for kind in order[shift:] + order[:shift]:
            pgdata = work / f"restore-{kind.replace('_', '-')}"
            rport = free_port(port + 1, ports)
            servers.started(pgdata)
            details = kinds[kind](pgdata, rport)
            details["rows_match"] = row_counts(rport) == source_counts
            runs[kind].append(details)
            say(f"{kind} restore, round {round_no + 1}/{rounds}: {details['seconds']:.1f} s, "
                f"rows match: {details['rows_match']}")
            servers.stop(pgdata)
            shutil.rmtree(pgdata, ignore_errors=True)
    restores: dict[str, Any] = {}
    for kind, results in runs.items():
        if not all(r["rows_match"] for r in results):
            raise BenchError(f"a {kind} restore's row counts differ from the source")
        ordered = sorted(results, key=lambda item: item["seconds"])
        restores[kind] = {**ordered[len(ordered) // 2],  # the median run, with its phases
                          "all_seconds": [item["seconds"] for item in results]}
    return restores


def change_five_percent(cluster: Any, round_no: int) -> None:
    """About 5 % of the rows of both big tables, in one contiguous stretch each (recent or
    hot rows, as in most workloads), so unchanged frames stay unchanged."""
    with cluster.connect() as conn:
        for table, key, change in (("pgbench_accounts", "aid", "abalance = abalance + 1"),
                                   ("bench_docs", "id", "note = note || 'x'")):
            row = conn.execute(f"SELECT min({key}), max({key}) FROM {table}").fetchone()
            assert row is not None
            low, high = int(row[0]), int(row[1])
            span = (high - low + 1) // 20
            start = low + (round_no * 7 % 19) * span
            conn.execute(f"UPDATE {table} SET {change} WHERE {key} >= %s AND {key} < %s",
                         (start, start + span))
        conn.execute("CHECKPOINT")


def delta_round(work: Path, cluster: Any, config: Path, servers: Servers, ports: set[int],
                port: int) -> dict[str, Any]:
    """A restored copy, stopped; ~5 % of rows change and a new backup is taken; then a delta
    restore of it (checksum mode), and a full one into a new directory; then another change
    and a delta restore trusting mtimes."""
    copy = work / "restore-delta"
    servers.started(copy)
    say("delta: a restored copy, stopped; then ~5% of rows change and a new backup is taken")
    pitr_child("restore", str(config), str(copy), str(free_port(port + 1, ports)))
    servers.stop(copy)
    result: dict[str, Any] = {}
    steps = (("delta", copy, ["--delta"], 1), ("full", work / "restore-full", [], None),
             ("delta_mtime", copy, ["--delta", "--trust-mtime"], 2))
    for kind, pgdata, extra, change_round in steps:
        if change_round is not None:
            change_five_percent(cluster, change_round)
            result[f"backup_{change_round}"] = pitr_child("backup", str(config))
            pitr_child("ship", str(config))
            expected = content_check(cluster.port)
        rport = free_port(port + 1, ports)
        servers.started(pgdata)
        result[kind] = timed_step(f"restore pitr {kind}", lambda p=pgdata, r=rport, e=extra: (
            pitr_child("restore", str(config), str(p), str(r), *e)))
        result[kind]["content_matches"] = content_check(rport) == expected
        say(f"pitr {kind} restore: {result[kind]['seconds']:.1f} s, content matches: "
            f"{result[kind]['content_matches']}, {result[kind].get('delta') or ''}")
        servers.stop(pgdata)
        if not result[kind]["content_matches"]:
            raise BenchError(f"the {kind} restore's content differs from the source")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.rmtree(work / "restore-full", ignore_errors=True)
    return result


def encryption_only(work: Path, scale_gb: float, servers: Servers, versions: dict[str, str],
                    rounds: int, ports: set[int]) -> dict[str, Any]:
    """The encryption case on a database built as for the whole benchmark: the same
    backups and restores by the core calls, unencrypted against encrypted."""
    from pitrflow.devtools.localpg import LocalCluster, world_traversable

    world_traversable(work)
    port = free_port(55440, ports)
    cluster = LocalCluster(work / "source", port, PG_BIN, run_as=RUN_AS, settings={
        "fsync": "on", "shared_buffers": "256MB", "max_wal_size": "2GB"})
    say(f"initdb + start PostgreSQL 15 in {work / 'source'} on port {port} as {RUN_AS}")
    cluster.init()
    servers.started(work / "source")
    cluster.start()
    database = build_database(cluster, scale_gb, PG_BIN)

    def stop(pgdata: Path) -> None:
        servers.started(pgdata)
        servers.stop(pgdata)

    encryption = encryption_case(work, port, PG_BIN, database["row_counts"], timed,
                                 lambda: free_port(port + 1, ports), stop, rounds)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {"cpus": os.cpu_count(), "work_dir": str(work)}, "versions": versions,
            "scale_gb": scale_gb, "database": database, "encryption": encryption}


if __name__ == "__main__":
    sys.exit(main())
